"""Wire protocol codecs. Each turns bytes into Requests and Results into bytes, with no I/O."""
