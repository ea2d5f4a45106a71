"""Container images and rootfs trees as bundle inputs (``pack --oci-image/--oci-archive/...``).

An image is turned into a private rootfs directory (layers applied in order, with whiteouts,
hard links and symlinks kept as they are), then the tree is planned like any bundle: every
regular file once, at its own path and at every path a symlink gives it, since LiteBox's tar
file system has no symlinks. ``build.prepare`` does all of that; ``write_bundle`` does the rest.
"""
