"""A sandbox's footprint on the host: its state directory (:mod:`.statedir`), cgroups, files
in and out (:mod:`.files`, :mod:`.output`), ownership locks, the inventory of everything
ClosedPaw left on the host (:mod:`.inventory`), reconciliation (``closedpaw gc``) and the
reaper that tears sandboxes down off the caller's path."""
