import importlib.util, os, sys
_HIDDEN = set(filter(None, os.environ.get('HIDE_MODULES', '').split(',')))
class _Hide:
    "Modules of an extra this install lacks: importing one fails, and find_spec finds none, as if it were not installed."
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in _HIDDEN: raise ModuleNotFoundError(f"No module named '{name}'", name=name)
if _HIDDEN:
    sys.meta_path.insert(0, _Hide())
    _find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, package=None: None if name.split('.')[0] in _HIDDEN else _find_spec(name, package)
