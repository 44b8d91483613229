"""Building and checking what caddy-beacon ships: the wheels for every supported CPython and
platform, the sdist, and their checksums (`make dist`, `make dist-test`)."""
