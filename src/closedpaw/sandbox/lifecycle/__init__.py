"""Sandboxes over time: the :mod:`.registry` (live set, cap, pools, snapshots), the
:mod:`.manager` that owns it, long-lived :mod:`.sandbox` objects, warm :mod:`.pool` s and
:mod:`.snapshot` s. Children receive the registry, never the manager; :mod:`.execute`
supervises one runtime process for one-shots and ``exec``."""
