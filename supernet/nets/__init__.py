"""Supernets per search-space family; importing this package registers them in `SUPERNETS`."""

from supernet.nets import nb201  # noqa: F401  (registers "nb201")
from supernet.nets import mobile  # noqa: F401  (registers "mobile")
from supernet.nets import fbnet  # noqa: F401  (registers "fbnet")
