"""Reading and writing files: atomic writes (:mod:`.atomic`), direction sets (:mod:`.directions`)
and the official code's direction files (:mod:`.official`). Import the submodules directly."""
