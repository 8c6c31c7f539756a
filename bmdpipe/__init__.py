"""bmdpipe: vertebral bone mineral density and pedicle-screw loosening on CT.

The public API is what this module and the subpackages' ``__init__`` export.
"""

__version__ = "0.1.0"
