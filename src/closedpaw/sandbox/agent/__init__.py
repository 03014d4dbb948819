"""The in-sandbox agent: its host side (:mod:`.channel`, the framed pipe protocol; :mod:`.stream`,
one command's output as an iterator) and :mod:`.inside` (the code that runs in the sandbox).
Only long-lived sandboxes use it; the one-shot path never imports this package."""
