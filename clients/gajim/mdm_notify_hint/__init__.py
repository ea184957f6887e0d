# Gajim loads this file and takes the first GajimPlugin subclass it finds in it: import only that.
from .plugin import MdmNotifyHintPlugin  # noqa: F401
