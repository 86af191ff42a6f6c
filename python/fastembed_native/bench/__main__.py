"""``python -m fastembed_native.bench``: the same as ``fastembed-native bench``."""

import sys

from .run import main

sys.exit(main())
