"""Unit tests for the text protocol through the command layer: replies that depend on the store.

A real Store on a fake clock, RWLock, Stats and Commands; requests parsed by
TextParser and answered with write_text / write_text_gets exactly as a
connection loop does (``Client.send``). No sockets, no sleeping.

TRANSCRIPTS are memcached 1.6.18's own replies, recorded on loopback by
sending each request whole to a freshly started memcached; replaying them
here checks the codec and the command layer together, byte for byte, CAS
values included (both count CAS from 1 the same way). The version string is
the one intended difference.
"""

from __future__ import annotations

import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbserver import PROTOCOL_VERSION
from mbserver.protocol.binary import BinaryParser, write_gets
from mbserver.store import (
    EXISTS,
    KEY_BINARY,
    NOT_FOUND,
    OK,
    STALE,
    WIN_SENT,
    Mode,
    Store,
)
from ..items import get_item, item_size

from .. import packets
from .conftest import FakeClock
from .textclient import Client

MEMCACHED_VERSION = b"VERSION 1.6.18\r\n"
OUR_VERSION = b"VERSION " + PROTOCOL_VERSION.encode() + b"\r\n"


# -- memcached's own replies ---------------------------------------------------

TRANSCRIPTS = [
    (b"\r\n", b"ERROR\r\n"),
    (b"\n", b"ERROR\r\n"),
    (b"x\r\n", b"ERROR\r\n"),
    (b"ge\r\n", b"ERROR\r\n"),
    (b"get\r\n", b"ERROR\r\n"),
    (b"get \r\n", b"ERROR\r\n"),
    (b"GET a\r\n", b"ERROR\r\n"),
    (b"gets\r\n", b"ERROR\r\n"),
    (b"set a 0 0 1\r\nx\r\nget a\r\n", b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n"),
    (b"set a 0 0 1\nx\r\nget a\n", b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n"),
    (
        b"set a 0 0 1\r\nx\r\nset a 0 0 3\r\nabcde\r\nget a\r\n",
        b"STORED\r\nCLIENT_ERROR bad data chunk\r\nERROR\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
    ),
    (b"set a 0 0 3 noreply\r\nabcXY\r\nget a\r\n", b"ERROR\r\nEND\r\n"),
    (b"set a 0 0 -1\r\nget a\r\n", b"CLIENT_ERROR bad command line format\r\nEND\r\n"),
    (b"set a 0 0 -1 noreply\r\nget a\r\n", b"END\r\n"),
    (b"set a 0 0\r\n", b"ERROR\r\n"),
    (b"set a 0 0 1 noreply extra\r\nx\r\n", b"ERROR\r\nERROR\r\n"),
    (b"set a 0 0 1 extra\r\nx\r\nget a\r\n", b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n"),
    (b"set a -1 0 1\r\nx\r\n", b"CLIENT_ERROR bad command line format\r\nERROR\r\n"),
    (b"set a 4294967296 0 1\r\nx\r\ngets a\r\n", b"STORED\r\nVALUE a 0 1 1\r\nx\r\nEND\r\n"),
    (b"set a 4294967295 0 1\r\nx\r\nget a\r\n", b"STORED\r\nVALUE a 4294967295 1\r\nx\r\nEND\r\n"),
    (b"set a 1x 0 1\r\nx\r\n", b"CLIENT_ERROR bad command line format\r\nERROR\r\n"),
    (b"set a 0 x 1\r\nx\r\n", b"CLIENT_ERROR bad command line format\r\nERROR\r\n"),
    (b"set a 0 0 x\r\nx\r\n", b"CLIENT_ERROR bad command line format\r\nERROR\r\n"),
    (b"set a 0 0 2147483647\r\nx\r\n", b"CLIENT_ERROR bad command line format\r\nERROR\r\n"),
    (b"set a 0 0 2147483646\r\nx\r\n", b"CLIENT_ERROR bad command line format\r\nERROR\r\n"),
    (
        b"set " + b"k" * 251 + b" 0 0 1\r\nx\r\n",
        b"CLIENT_ERROR bad command line format\r\nERROR\r\n",
    ),
    (b"set " + b"k" * 250 + b" 0 0 1\r\nx\r\n", b"STORED\r\n"),
    (b"get " + b"k" * 251 + b"\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (
        b"set n 5 0 2\r\n10\r\ngets n\r\nget n n nx\r\ngat 100 n nx\r\ngats 100 n\r\n",
        b"STORED\r\nVALUE n 5 2 1\r\n10\r\nEND\r\nVALUE n 5 2\r\n10\r\nVALUE n 5 2\r\n10\r\nEND\r\nVALUE n 5 2\r\n10\r\nEND\r\nVALUE n 5 2 1\r\n10\r\nEND\r\n",
    ),
    (b"gat\r\n", b"ERROR\r\n"),
    (b"gat 10\r\n", b"END\r\n"),
    (b"gat x n\r\n", b"CLIENT_ERROR invalid exptime argument\r\n"),
    (b"gat -1 zz\r\n", b"END\r\n"),
    (b"gat 10 " + b"k" * 251 + b"\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (
        b"set n 0 0 2\r\n10\r\nincr n 5\r\nget n\r\ndecr n 100\r\nget n\r\nincr n 1 noreply\r\nget n\r\n",
        b"STORED\r\n15\r\nVALUE n 0 2\r\n15\r\nEND\r\n0\r\nVALUE n 0 2\r\n0 \r\nEND\r\nVALUE n 0 2\r\n1 \r\nEND\r\n",
    ),
    (b"incr nx 1\r\n", b"NOT_FOUND\r\n"),
    (
        b"set n 0 0 1\r\n1\r\nincr n abc\r\nincr n -1\r\nincr n 18446744073709551616\r\nincr n 18446744073709551615\r\n",
        b"STORED\r\nCLIENT_ERROR invalid numeric delta argument\r\nCLIENT_ERROR invalid numeric delta argument\r\nCLIENT_ERROR invalid numeric delta argument\r\n0\r\n",
    ),
    (b"incr n\r\n", b"ERROR\r\n"),
    (b"incr n 1 2 3\r\n", b"ERROR\r\n"),
    (b"incr n abc noreply\r\n", b""),
    (b"set n 0 0 1\r\n1\r\nincr n 1 foo\r\n", b"STORED\r\n2\r\n"),
    (
        b"set s 0 0 3\r\nabc\r\nincr s 1\r\ndecr s 1\r\n",
        b"STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    ),
    (b"incr " + b"k" * 251 + b" 1\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (
        b"set big 0 0 20\r\n18446744073709551615\r\nincr big 1\r\nget big\r\n",
        b"STORED\r\n0\r\nVALUE big 0 20\r\n0                   \r\nEND\r\n",
    ),
    (b"set sp 0 0 3\r\n 12\r\nincr sp 1\r\n", b"STORED\r\n13\r\n"),
    (
        b"set n 0 0 1\r\nx\r\ndelete nx\r\ndelete n 0\r\ndelete n 5\r\ndelete n noreply\r\ndelete n 0 noreply\r\ndelete n 5 noreply\r\ndelete n x y z\r\ndelete\r\n",
        b"STORED\r\nNOT_FOUND\r\nDELETED\r\nCLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\nERROR\r\nERROR\r\n",
    ),
    (b"delete " + b"k" * 251 + b"\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"delete " + b"k" * 251 + b" noreply\r\n", b""),
    (b"touch n 10\r\n", b"NOT_FOUND\r\n"),
    (
        b"set t 0 0 1\r\nx\r\ntouch t 10\r\ntouch t x\r\ntouch t 10 noreply\r\ntouch t\r\n",
        b"STORED\r\nTOUCHED\r\nCLIENT_ERROR invalid exptime argument\r\nERROR\r\n",
    ),
    (b"touch t x noreply\r\n", b""),
    (b"flush_all\r\n", b"OK\r\n"),
    (b"flush_all 0\r\n", b"OK\r\n"),
    (b"flush_all noreply\r\n", b""),
    (b"flush_all x\r\n", b"CLIENT_ERROR invalid exptime argument\r\n"),
    (b"flush_all 10 noreply\r\n", b""),
    (b"flush_all 10 x\r\n", b"OK\r\n"),
    (b"flush_all 1 2 3\r\n", b"ERROR\r\n"),
    (b"flush_all -1\r\n", b"OK\r\n"),
    (b"flush_all x noreply\r\n", b""),
    (b"flush_all noreply x\r\n", b"CLIENT_ERROR invalid exptime argument\r\n"),
    (b"verbosity\r\n", b"ERROR\r\n"),
    (b"verbosity 1\r\n", b"OK\r\n"),
    (b"verbosity 1 noreply\r\n", b""),
    (b"verbosity x\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"verbosity noreply\r\n", b""),
    (b"verbosity 1 2 3\r\n", b"ERROR\r\n"),
    (b"verbosity -1\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"verbosity 1 x\r\n", b"OK\r\n"),
    (b"quit\r\nversion\r\n", b"", True),
    (b"quit x\r\nversion\r\n", b"", True),
    (b"versionx\r\n", b"ERROR\r\n"),
    (
        b"set c 0 0 1\r\nx\r\ngets c\r\ncas c 0 0 1 999\r\ny\r\ncas cx 0 0 1 1\r\ny\r\ncas c 0 0 1 1\r\nz\r\ngets c\r\n",
        b"STORED\r\nVALUE c 0 1 1\r\nx\r\nEND\r\nEXISTS\r\nNOT_FOUND\r\nSTORED\r\nVALUE c 0 1 2\r\nz\r\nEND\r\n",
    ),
    (b"cas c 0 0 1\r\ny\r\n", b"ERROR\r\nERROR\r\n"),
    (b"cas c 0 0 1 abc\r\ny\r\n", b"CLIENT_ERROR bad command line format\r\nERROR\r\n"),
    (b"cas c 0 0 1 -1\r\ny\r\n", b"CLIENT_ERROR bad command line format\r\nERROR\r\n"),
    (b"cas c 0 0 1 1 noreply\r\ny\r\n", b""),
    (b"cas c 0 0 1 1 2 3\r\ny\r\n", b"ERROR\r\nERROR\r\n"),
    (
        b"set c 0 0 1\r\nx\r\nadd c 0 0 1\r\ny\r\nadd cnew 0 0 1\r\ny\r\nreplace cnx 0 0 1\r\ny\r\nreplace c 0 0 1\r\nz\r\nget c\r\n",
        b"STORED\r\nNOT_STORED\r\nSTORED\r\nNOT_STORED\r\nSTORED\r\nVALUE c 0 1\r\nz\r\nEND\r\n",
    ),
    (
        b"set c 0 0 1\r\nz\r\nappend c 9 9 2\r\nAA\r\nprepend c 9 9 2\r\nBB\r\nappend cnx 0 0 1\r\nx\r\nget c\r\n",
        b"STORED\r\nSTORED\r\nSTORED\r\nNOT_STORED\r\nVALUE c 0 5\r\nBBzAA\r\nEND\r\n",
    ),
    (b"set e 0 -1 1\r\nx\r\nget e\r\n", b"STORED\r\nEND\r\n"),
    (b"set e 0 2147483648 1\r\nx\r\nget e\r\n", b"STORED\r\nEND\r\n"),
    (b"set e +5 +0 +1\r\nx\r\nget e\r\n", b"STORED\r\nVALUE e 5 1\r\nx\r\nEND\r\n"),
    (b"set e 5\t 0\t 1\t\r\nx\r\nget e\r\n", b"STORED\r\nVALUE e 5 1\r\nx\r\nEND\r\n"),
    (b"set\te 0 0 1\r\nx\r\n", b"ERROR\r\nERROR\r\n"),
    (b"get a\x00b\r\n", b"END\r\n"),
    (b"set e\x00junk 0 0 1\r\nx\r\n", b"ERROR\r\nERROR\r\n"),
    (b"set e 0 0 0\r\n\r\nget e\r\n", b"STORED\r\nVALUE e 0 0\r\n\r\nEND\r\n"),
    (b"set e 0 0 1\r\nxy\r\n", b"CLIENT_ERROR bad data chunk\r\nERROR\r\n"),
    (b"set e 0 0 1\r\nx\n\r\n", b"CLIENT_ERROR bad data chunk\r\nERROR\r\n"),
    (b"set e 0 0 1\r\nx", b""),
    (
        b"set e 0 0 1\r\nx\r\nget e  e\r\n  get e\r\nget e\r\r\n",
        b"STORED\r\nVALUE e 0 1\r\nx\r\nVALUE e 0 1\r\nx\r\nEND\r\nVALUE e 0 1\r\nx\r\nEND\r\nEND\r\n",
    ),
    (b"set a 0 0 4294967297\r\nx\r\nget a\r\n", b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n"),
    (
        b"shutdown\r\nshutdown graceful\r\n",
        b"ERROR: shutdown not enabled\r\nERROR: shutdown not enabled\r\n",
    ),
    (b"set a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a \r\n", b"ERROR\r\n"),
    (b"set a 0 0 1 noreply\r\nx\r\nget a\r\n", b"VALUE a 0 1\r\nx\r\nEND\r\n"),
    (
        b"set a 0 0 1\r\nx\r\nset a 7 0 1 noreply\r\nyy\r\nget a\r\n",
        b"STORED\r\nERROR\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
    ),
    (b"bget a b\r\n", b"END\r\n"),
    (b"set 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24\r\n", b"ERROR\r\n"),
    (b"get a b c d e f g h i j k l m n o p q r s t u v w x y z 1 2 3 4 5 6 7 8 9\r\n", b"END\r\n"),
    (
        b"set m 7 0 3\r\nabc\r\nmg m\r\nmg m v\r\nmg m s v f c k t h l O123\r\nmg mx\r\nmg mx q\r\nmg mx k O5\r\nmg mx q k\r\nmn\r\n",
        b"STORED\r\nHD\r\nVA 3\r\nabc\r\nVA 3 s3 f7 c1 km t-1 h1 l0 O123\r\nabc\r\nEN\r\nEN kmx O5\r\nMN\r\n",
    ),
    (b"mg\r\n", b"ERROR\r\n"),
    (b"mg \r\n", b"ERROR\r\n"),
    (b"mn x y\r\n", b"MN\r\n"),
    (b"mx\r\n", b"ERROR\r\n"),
    (
        b"set m 0 0 1\r\nx\r\nme m\r\nmg m zz\r\nmg m v v\r\nmg m !\r\nmg m \x80\r\n",
        b"STORED\r\nME m exp=-1 la=0 cas=1 fetch=no cls=1 size=61\r\nCLIENT_ERROR invalid flag\r\nCLIENT_ERROR duplicate flag\r\nCLIENT_ERROR invalid flag\r\nCLIENT_ERROR duplicate flag\r\n",
    ),
    (b"mg " + b"k" * 251 + b" v\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"mg " + b"k" * 251 + b"\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (
        b"set m 0 0 1\r\nx\r\nmg m O"
        + b"x" * 31
        + b"\r\nmg m O"
        + b"x" * 32
        + b"\r\nmgx m\r\nmg mx O"
        + b"x" * 40
        + b"\r\n",
        b"STORED\r\nHD O"
        + b"x" * 31
        + b"\r\nCLIENT_ERROR opaque token too long\r\nERROR\r\nCLIENT_ERROR opaque token too long\r\n",
    ),
    (
        b"set m 7 0 3\r\nabc\r\nmg m c f h k l O1 q s t u v P L\r\nmg m c f h k l O1 q s t u v P L Y\r\nmg m a\r\nmg m 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18\r\n",
        b"STORED\r\nVA 3 c1 f7 h0 km l0 O1 s3 t-1\r\nabc\r\nCLIENT_ERROR invalid flag\r\nCLIENT_ERROR invalid flag\r\nCLIENT_ERROR options flags are too long\r\n",
    ),
    (
        b"set m 7 0 3\r\nabc\r\nmg m c f h k l O1 q s t u v P L T0 R0 N0\r\nmg m c f h k l O1 q s t u v P L T0 R0 N0 I E\r\n",
        b"STORED\r\nVA 3 c1 f7 h0 km l0 O1 s3 t-1\r\nabc\r\nCLIENT_ERROR options flags are too long\r\n",
    ),
    (
        b"mg m 1\r\nmg m v 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18\r\nmg m 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\r\n",
        b"CLIENT_ERROR invalid flag\r\nCLIENT_ERROR options flags are too long\r\nCLIENT_ERROR invalid flag\r\n",
    ),
    (
        b"set m 0 0 3\r\nabc\r\nmg m q\r\nmg m q v\r\nmg mx q v\r\nmn\r\nmg mx k\r\nmg mx O5\r\nmg mx k O5\r\nmg mx O5 k b\r\n",
        b"STORED\r\nHD\r\nVA 3\r\nabc\r\nMN\r\nEN kmx\r\nEN O5\r\nEN kmx O5\r\nCLIENT_ERROR error decoding key\r\n",
    ),
    (
        b"ms s1 3\r\nabc\r\nmg s1 v f t c\r\nms s1 3 T100 F5 c k O9\r\nabc\r\nmg s1 v f t\r\nms s1 3 q\r\nabc\r\nmn\r\nms s1 3 q ME\r\nabc\r\nmn\r\n",
        b"HD\r\nVA 3 f0 t-1 c1\r\nabc\r\nHD c2 ks1 O9\r\nVA 3 f5 t100\r\nabc\r\nMN\r\nNS\r\nMN\r\n",
    ),
    (b"ms s1\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"ms s1 \r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"ms\r\n", b"ERROR\r\n"),
    (b"ms s1 x\r\nabc\r\n", b"CLIENT_ERROR bad command line format\r\nERROR\r\n"),
    (b"ms s1 -1\r\nabc\r\n", b"CLIENT_ERROR bad command line format\r\nERROR\r\n"),
    (b"ms s1 3 zz\r\nabc\r\nmn\r\n", b"CLIENT_ERROR invalid flag\r\nMN\r\n"),
    (b"ms s1 3 MX\r\nabc\r\nmn\r\n", b"CLIENT_ERROR invalid mode for ms M token\r\nMN\r\n"),
    (b"ms s1 3 MSS\r\nabc\r\nmn\r\n", b"CLIENT_ERROR incorrect length for M token\r\nMN\r\n"),
    (b"ms s1 3 M\r\nabc\r\nmn\r\n", b"CLIENT_ERROR incorrect length for M token\r\nMN\r\n"),
    (
        b"ms s1 3\r\nabc\r\nms s1 3 ME\r\nabc\r\nms snew1 3 ME\r\nabc\r\nms sx 3 MR\r\nabc\r\nms s1 3 MR\r\nxyz\r\n",
        b"HD\r\nNS\r\nHD\r\nNS\r\nHD\r\n",
    ),
    (
        b"ms s1 3\r\nxyz\r\nms s1 1 MA\r\nA\r\nms s1 1 MP\r\nP\r\nmg s1 v\r\nms sx 1 MA\r\nA\r\nms s1 1 Ma\r\nA\r\nms s1 1 Ms\r\nA\r\n",
        b"HD\r\nHD\r\nHD\r\nVA 5\r\nPxyzA\r\nNS\r\nCLIENT_ERROR invalid mode for ms M token\r\nCLIENT_ERROR invalid mode for ms M token\r\n",
    ),
    (
        b"ms s1 3\r\nxyz\r\nms s1 3 C1\r\nabc\r\nms sxx 3 C1\r\nabc\r\nms s1 3 C1 q\r\nabc\r\nmn\r\n",
        b"HD\r\nHD\r\nNF\r\nEX\r\nMN\r\n",
    ),
    (
        b"ms s1 3 Cabc\r\nabc\r\nms s1 3 F-1\r\nabc\r\nms s1 3 Fx\r\nabc\r\nms s1 3 F4294967296\r\nabc\r\nmg s1 f\r\nms s1 3 Tx\r\nabc\r\nms s1 3 T-1\r\nabc\r\nmg s1\r\n",
        b"CLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\nHD\r\nHD f0\r\nCLIENT_ERROR bad token in command line format\r\nHD\r\nEN\r\n",
    ),
    (
        b"ms s1 3 v\r\nabc\r\nms s1 3 s\r\nabc\r\nms s1 3 t\r\nabc\r\nms s1 3 f\r\nabc\r\nms s1 3 h\r\nabc\r\nms s1 3 l\r\nabc\r\nms s1 3 u\r\nabc\r\nms s1 3 N5\r\nabc\r\nms s1 3 D5\r\nabc\r\nms s1 3 J5\r\nabc\r\nms s1 3 R5\r\nabc\r\nms s1 3 P L\r\nabc\r\nms s1 3 S3\r\nabc\r\nms s1 3 E5\r\nabc\r\n",
        b"HD\r\nHD\r\nHD\r\nHD\r\nHD\r\nHD\r\nHD\r\nHD\r\nHD\r\nHD\r\nHD\r\nHD\r\nCLIENT_ERROR invalid flag\r\nCLIENT_ERROR invalid flag\r\n",
    ),
    (b"ms s1 3\r\nabcde\r\nmn\r\n", b"CLIENT_ERROR bad data chunk\r\nERROR\r\nMN\r\n"),
    (b"ms s1 3 q\r\nabcde\r\nmn\r\n", b"CLIENT_ERROR bad data chunk\r\nERROR\r\nMN\r\n"),
    (
        b"ms " + b"k" * 251 + b" 3\r\nabc\r\nmn\r\n",
        b"CLIENT_ERROR bad command line format\r\nERROR\r\nMN\r\n",
    ),
    (
        b"ms s1 3 O" + b"x" * 33 + b"\r\nabc\r\nmn\r\n",
        b"CLIENT_ERROR opaque token too long\r\nMN\r\n",
    ),
    (b"ms s1 3 b\r\nabc\r\nmn\r\n", b"CLIENT_ERROR error decoding key\r\nMN\r\n"),
    (
        b"ms czE= 3 b k\r\nabc\r\nmg czE= b k v\r\nmg s1 v k\r\nset s1 0 0 1\r\nx\r\nmg s1 k\r\nmg czE= b k\r\n",
        b"HD kczE= b\r\nVA 3 kczE= b\r\nabc\r\nVA 3 kczE= b\r\nabc\r\nSTORED\r\nHD ks1\r\nHD ks1\r\n",
    ),
    (
        b"ms s1 3 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\r\nabc\r\nmn\r\n",
        b"CLIENT_ERROR options flags too long\r\nERROR\r\nMN\r\n",
    ),
    (b"ms s1 3\r\nabc\r\nms s1 3 c k O1 q T0 F0 C0 P L I\r\nabc\r\n", b"HD\r\nEX c0 ks1 O1\r\n"),
    (b"ms d1 1\r\nx\r\nmd d1\r\nmd d1\r\nmd d1 q\r\nmn\r\n", b"HD\r\nHD\r\nNF\r\nNF\r\nMN\r\n"),
    (b"ms d1 1\r\nx\r\nmd d1 q\r\nmg d1\r\n", b"HD\r\nEN\r\n"),
    (b"ms d1 1\r\nx\r\nmd d1 k O7\r\nmd d1 k O7\r\n", b"HD\r\nHD kd1 O7\r\nNF kd1 O7\r\n"),
    (b"ms d1 1\r\nx\r\nmd d1 C1\r\nmd d1 C1 q\r\nmd dx C1\r\n", b"HD\r\nHD\r\nNF\r\nNF\r\n"),
    (
        b"ms d1 1 c\r\nx\r\nmd d1 zz\r\nmd d1 v\r\nmd d1 Cx\r\nmd d1 k k\r\nmd\r\nmd d1 MX\r\n",
        b"HD c1\r\nCLIENT_ERROR invalid or duplicate flag\r\nHD\r\nCLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\nERROR\r\nNF\r\n",
    ),
    (b"md " + b"k" * 251 + b"\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"md d1 O" + b"x" * 33 + b"\r\n", b"CLIENT_ERROR opaque token too long\r\n"),
    (
        b"md d1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18\r\n",
        b"CLIENT_ERROR options flags too long\r\n",
    ),
    (
        b"ms d2 1 T100\r\nx\r\nmd d2 I T30\r\nmg d2 v t c\r\nmg d2 t\r\nmg d2 t\r\n",
        b"HD\r\nHD\r\nVA 1 t30 c2 X W\r\nx\r\nHD t30 Z X\r\nHD t30 Z X\r\n",
    ),
    (
        b"ms d3 1\r\nx\r\nmd d3 I q\r\nmn\r\nmg d3 c\r\nms d3 1\r\nx\r\nmd d3 T30\r\nmg d3\r\n",
        b"HD\r\nMN\r\nHD c2 X W\r\nHD\r\nHD\r\nEN\r\n",
    ),
    (
        b"md dnx I\r\nmd d1 b\r\nmd ZDE= b k\r\n",
        b"NF\r\nCLIENT_ERROR invalid or duplicate flag\r\nNF kZDE= b\r\n",
    ),
    (
        b"mg v1 N30 v c t\r\nmg v1 N30 v t\r\nmg v1 v\r\nms v1 3\r\nabc\r\nmg v1 v\r\n",
        b"VA 0 c1 t30 W\r\n\r\nVA 0 t30 Z\r\n\r\nVA 0 Z\r\n\r\nHD\r\nVA 3\r\nabc\r\n",
    ),
    (b"mg v2 N30 q\r\nmg v2 q\r\nmn\r\n", b"HD W\r\nHD Z\r\nMN\r\n"),
    (
        b"ms r1 1 T100\r\nx\r\nmg r1 R30 t\r\nmg r1 R200 t\r\nmg r1 R200 t\r\n",
        b"HD\r\nHD t100\r\nHD t100 W\r\nHD t100 Z\r\n",
    ),
    (b"ms r2 1\r\nx\r\nmg r2 R200\r\n", b"HD\r\nHD\r\n"),
    (
        b"ms r3 1 T100\r\nx\r\nmd r3 I\r\nmg r3 R200\r\nmg r3\r\nmd r3 I\r\nmg r3 q\r\n",
        b"HD\r\nHD\r\nHD X W\r\nHD Z X\r\nHD\r\nHD X W\r\n",
    ),
    (
        b"mg v3 Nx\r\nmg v3 T\r\nmg v3 N\r\nmg v3 R\r\nmg v3 C5\r\nmg v3 Fx\r\nmg v3 F\r\nmg v3 M\r\nmg v3 MX\r\nmg v3 D\r\nmg v3 Dx\r\nmg v3 Jx\r\nmg v3 I\r\n",
        b"CLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR bad token in command line format\r\nEN\r\nCLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\nCLIENT_ERROR incorrect length for M token\r\nEN\r\nCLIENT_ERROR invalid numeric delta value\r\nCLIENT_ERROR invalid numeric delta value\r\nCLIENT_ERROR invalid numeric initial value\r\nEN\r\n",
    ),
    (
        b"mg v4 T30 t\r\nms v5 1\r\nx\r\nmg v5 T30 t\r\nmg v5 t T60\r\n",
        b"EN\r\nHD\r\nHD t30\r\nHD t30\r\n",
    ),
    (
        b"ma a1\r\nma a1 q\r\nmn\r\nma a1 N0\r\nmg a1 v\r\n",
        b"NF\r\nNF\r\nMN\r\nHD\r\nVA 1\r\n0\r\n",
    ),
    (  # q hides a success, but not a counter that N created
        b"ma qv1 q N0 J7 v O1\r\nma qv2 q N0 J7 O2\r\nma qv1 q v O3\r\nmn\r\n",
        b"VA 1 O1\r\n7\r\nHD O2\r\nMN\r\n",
    ),
    (
        b"ma a1 N0 J10 v\r\nma a1 v\r\nma a1 v D5\r\nma a1 v MD D100\r\nma a1 v M-\r\nma a1 M+ v\r\nma a1 MI v\r\nma a1 Mi v\r\n",
        b"VA 2\r\n10\r\nVA 2\r\n11\r\nVA 2\r\n16\r\nVA 1\r\n0\r\nVA 1\r\n0\r\nVA 1\r\n1\r\nVA 1\r\n2\r\nCLIENT_ERROR invalid mode for ma M token\r\n",
    ),
    (
        b"ma a2 N0 J10 v t c k O1\r\nma a2 v t c k O1 q\r\nma a2 q\r\nmn\r\n",
        b"VA 2 t-1 c1 ka2 O1\r\n10\r\nMN\r\n",
    ),
    (
        b"ma a3 N100 J5 t v\r\nma a3 t v T50\r\nma a3 T50 t v\r\n",
        b"VA 1 t100\r\n5\r\nVA 1 t100\r\n6\r\nVA 1 t50\r\n7\r\n",
    ),
    (
        b"ms a4 3\r\nabc\r\nma a4\r\nma a4 q\r\nmn\r\n",
        b"HD\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nMN\r\n",
    ),
    (
        b"ms a5 1\r\n5\r\nma a5 C1\r\nma a5 C1 q\r\nmn\r\nmg a5 c\r\nma a5 C0 v\r\nmd a5 C0\r\n",
        b"HD\r\nHD\r\nEX\r\nMN\r\nHD c2\r\nVA 1\r\n7\r\nEX\r\n",
    ),
    (
        b"ma a6 Dx\r\nma a6 D-1\r\nma a6 D18446744073709551616\r\nma a6 J-1\r\nma a6 zz\r\nma a6 MX\r\nma a6 MX q\r\nma a6 M\r\nma a6 Cx\r\nma\r\nma "
        + b"k" * 251
        + b"\r\n",
        b"CLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid mode for ma M token\r\nCLIENT_ERROR invalid mode for ma M token\r\nCLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\nERROR\r\nCLIENT_ERROR bad command line format\r\n",
    ),
    (
        b"ma a6 s\r\nma a6 f\r\nma a6 h\r\nma a6 l\r\nma a6 u\r\nma a6 I\r\nma a6 F5\r\nma a6 R5\r\nma a6 P L\r\n",
        b"NF\r\nNF\r\nNF\r\nNF\r\nNF\r\nNF\r\nNF\r\nNF\r\nNF\r\n",
    ),
    (
        b"ma a7 NF\r\nma a8 N0 MD J5 v\r\nma a9 J5 v\r\nma YTk= b N0 v k\r\nma a10 N0 D7 J3 v\r\n",
        b"CLIENT_ERROR invalid or duplicate flag\r\nVA 1\r\n5\r\nNF\r\nVA 1 kYTk= b\r\n0\r\nVA 1\r\n3\r\n",
    ),
    (
        b"ms a11 20\r\n18446744073709551615\r\nma a11 v\r\nmg a11 v\r\n",
        b"HD\r\nVA 1\r\n0\r\nVA 20\r\n0                   \r\n",
    ),
    (b"ms a12 2\r\n10\r\nma a12 MD v\r\nmg a12 v\r\n", b"HD\r\nVA 1\r\n9\r\nVA 2\r\n9 \r\n"),
    (
        b"ma a13 O" + b"x" * 33 + b"\r\nma a13 N0 O" + b"x" * 33 + b"\r\nmg a13\r\n",
        b"CLIENT_ERROR opaque token too long\r\nCLIENT_ERROR opaque token too long\r\nHD\r\n",
    ),
    (
        b"ms a14 2 T100\r\n10\r\nma a14 T0 t\r\nma a14 t\r\nma a15 N50 t T5 J1 v\r\n",
        b"HD\r\nHD t-1\r\nHD t-1\r\nVA 1 t50\r\n1\r\n",
    ),
    (
        b"mg czE b k\r\nmg czE= b k\r\nmg czE=x b k\r\nmg !!!! b k\r\nmg czE== b k\r\nmg czE=czE= b k\r\n",
        b"CLIENT_ERROR error decoding key\r\nEN kczE= b\r\nCLIENT_ERROR error decoding key\r\nCLIENT_ERROR error decoding key\r\nCLIENT_ERROR error decoding key\r\nEN kczE= b\r\n",
    ),
    (
        b"mg cw== b k\r\nmg cw= b k\r\nmg cw b k\r\nmg YWJj b k\r\nmg YW Jj b k\r\nmg ==== b k\r\nmg A=== b k\r\nmg AA== b k\r\nmg _-== b k\r\n",
        b"EN kcw== b\r\nCLIENT_ERROR error decoding key\r\nCLIENT_ERROR error decoding key\r\nEN kYWJj b\r\nCLIENT_ERROR error decoding key\r\nCLIENT_ERROR error decoding key\r\nCLIENT_ERROR error decoding key\r\nEN kAA== b\r\nCLIENT_ERROR error decoding key\r\n",
    ),
    (
        b"ms AAAA 1 b\r\nx\r\nmg AAAA b k v\r\nmg AAAA b k v c\r\n",
        b"HD\r\nVA 1 kAAAA b\r\nx\r\nVA 1 kAAAA b c1\r\nx\r\n",
    ),
    (
        b"mg YWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJj b k\r\nmg YWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWJjYWI= b k\r\nmg c2 B\r\nset ms 0 0 1\r\nx\r\nmg ms b\r\n",
        b"CLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\nCLIENT_ERROR invalid flag\r\nSTORED\r\nCLIENT_ERROR error decoding key\r\n",
    ),
    (b"ms t2 1\r\nx\r\nmg t2 T-1 t\r\nmg t2\r\n", b"HD\r\nHD t4294967235\r\nEN\r\n"),
    (b"ms t3 1 T100\r\nx\r\nmd t3 I T-1\r\nmg t3 t\r\n", b"HD\r\nHD\r\nEN\r\n"),
    (
        b"set la3 0 0 1\r\nx\r\nmg la3 u h\r\nmg la3 u h\r\nmg la3 h\r\nmg la3 h\r\nset la4 0 0 1\r\nx\r\ntouch la4 100\r\nmg la4 h\r\n",
        b"STORED\r\nHD h0\r\nHD h0\r\nHD h0\r\nHD h1\r\nSTORED\r\nTOUCHED\r\nHD h1\r\n",
    ),
    (
        b"set la5 0 0 1\r\nx\r\ngat 100 la5\r\nmg la5 h\r\nset la6 0 0 1\r\nx\r\nmg la6 T100\r\nmg la6 h\r\n",
        b"STORED\r\nVALUE la5 0 1\r\nx\r\nEND\r\nHD h1\r\nSTORED\r\nHD\r\nHD h1\r\n",
    ),
    (
        b"set c0 0 0 1\r\nx\r\ncas c0 0 0 1 0\r\ny\r\ncas c0nx 0 0 1 0\r\ny\r\nms ce1 1 ME C5\r\nx\r\nms ce1 1 ME C5\r\nx\r\nmg ce1 c\r\nms ce1 1 MA C1\r\nx\r\nms ce2 1 MA C1\r\nx\r\nms ce2 1 MR C0\r\nx\r\nms ce1 1 MR C0\r\nx\r\nms ce1 1 MP\r\nP\r\nmg ce1 v\r\n",
        b"STORED\r\nEXISTS\r\nNOT_FOUND\r\nHD\r\nNS\r\nHD c2\r\nEX\r\nNS\r\nNF\r\nEX\r\nHD\r\nVA 2\r\nPx\r\n",
    ),
    (
        b"ms si2 1 T100 c\r\nx\r\nms si2 1 C1 I T5\r\ny\r\nmg si2 v t c\r\nmg si2 v t c\r\nms si2 1 C99999 I\r\nz\r\nms si2 1 C1 I\r\nw\r\nmg si2 v t c\r\nms si2 1 C1 I MA\r\nw\r\nmg si2 v\r\nms si2 1 C1 I MR q\r\nr\r\nmg si2 v\r\nms si2 1 I\r\nn\r\nmg si2 v\r\n",
        b"HD c1\r\nHD\r\nVA 1 t5 c2\r\ny\r\nVA 1 t5 c2\r\ny\r\nEX\r\nHD\r\nVA 1 t5 c3 X W\r\nw\r\nEX\r\nVA 1 Z X\r\nw\r\nVA 1 Z X\r\nr\r\nHD\r\nVA 1\r\nn\r\n",
    ),
    (
        b"ms czE= 3 b\r\nabc\r\nmg s1 k v\r\nset s1 0 0 1\r\nx\r\nmg s1 k\r\nms czE= 3 b\r\nabc\r\nappend s1 0 0 1\r\nx\r\nmg s1 k\r\nmg bnYx b N0 k\r\nmg nv1 k\r\n",
        b"HD\r\nVA 3 kczE= b\r\nabc\r\nSTORED\r\nHD ks1\r\nHD\r\nSTORED\r\nHD ks1\r\nHD knv1 W\r\nHD knv1 Z\r\n",
    ),
    (
        b"set me1 5 100 1\r\nx\r\nme me1\r\nme me1 x\r\nme\r\nme nosuch\r\nset me2 0 0 37\r\n"
        + b"y" * 37
        + b"\r\nme me2\r\nms czE= 3 b\r\nabc\r\nme czE= b\r\nme s1\r\nmg me1 v\r\nme me1\r\n",
        b"STORED\r\nME me1 exp=-100 la=0 cas=1 fetch=no cls=1 size=67\r\nME me1 exp=-100 la=0 cas=1 fetch=no cls=1 size=67\r\nCLIENT_ERROR bad command line format\r\nEN\r\nSTORED\r\nME me2 exp=-1 la=0 cas=2 fetch=no cls=2 size=99\r\nHD\r\nME czE= exp=-1 la=0 cas=3 fetch=no cls=1 size=64\r\nME czE= exp=-1 la=0 cas=3 fetch=no cls=1 size=64\r\nVA 1\r\nx\r\nME me1 exp=-100 la=0 cas=1 fetch=yes cls=1 size=67\r\n",
    ),
    (
        b"mg v N30\r\nget v\r\ngets v\r\nmg v s v\r\n",
        b"HD W\r\nVALUE v 0 0\r\n\r\nEND\r\nVALUE v 0 0 1\r\n\r\nEND\r\nVA 0 s0 Z\r\n\r\n",
    ),
    (
        b"set a 0 0 1\r\n1\r\ndecr a 1\r\ndecr a 1\r\nget a\r\nincr a 5\r\nget a\r\n",
        b"STORED\r\n0\r\n0\r\nVALUE a 0 1\r\n0\r\nEND\r\n5\r\nVALUE a 0 1\r\n5\r\nEND\r\n",
    ),
    (b"set a 0 0 2\r\n 5\r\nincr a 1\r\n", b"STORED\r\n6\r\n"),
    (b"set a 0 0 2\r\n5 \r\nincr a 1\r\nget a\r\n", b"STORED\r\n6\r\nVALUE a 0 2\r\n6 \r\nEND\r\n"),
    (b"set a 0 0 2\r\n+5\r\nincr a 1\r\n", b"STORED\r\n6\r\n"),
    (
        b"set a 0 0 2\r\n-5\r\nincr a 1\r\n",
        b"STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    ),
    (
        b"set a 0 0 0\r\n\r\nincr a 1\r\n",
        b"STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    ),
    (
        b"set a 0 0 21\r\n000000000000000000005\r\nincr a 1\r\nget a\r\n",
        b"STORED\r\n6\r\nVALUE a 0 21\r\n6                    \r\nEND\r\n",
    ),
    (
        b"set a 0 0 1\r\n5\r\nincr a 0\r\nincr a "
        + b"0" * 31
        + b"1\r\nincr a +1\r\nincr a 1x\r\nincr a \t1\r\n",
        b"STORED\r\n5\r\n6\r\n7\r\nCLIENT_ERROR invalid numeric delta argument\r\n8\r\n",
    ),
    (
        b"set a 0 0 1 noreply\r\nx\r\nadd a 0 0 1 noreply\r\ny\r\nreplace a 0 0 1 noreply\r\nz\r\nappend a 0 0 1 noreply\r\nw\r\nprepend a 0 0 1 noreply\r\nv\r\nget a\r\n",
        b"VALUE a 0 3\r\nvzw\r\nEND\r\n",
    ),
    (
        b"set a 0 0 1\r\nx\r\ntouch a 0 noreply\r\ndelete a noreply\r\nget a\r\nincr a 1 noreply\r\ndecr a 1 noreply\r\nmn\r\n",
        b"STORED\r\nEND\r\nMN\r\n",
    ),
    (b"set a 0 0 1\r\nx\r\nflush_all\r\nget a\r\n", b"STORED\r\nOK\r\nEND\r\n"),
    (
        b"set a 0 0 1\r\nx\r\nflush_all 100\r\nget a\r\n",
        b"STORED\r\nOK\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
    ),
    (b"set a 0 0 1\r\nx\r\nflush_all 0 noreply\r\nget a\r\n", b"STORED\r\nEND\r\n"),
    (
        b"gets a b c\r\nset b 3 0 1\r\nB\r\nset c 4 0 2\r\nCC\r\ngets a b c\r\ngat 0 a b c\r\ngats 0 b c\r\n",
        b"END\r\nSTORED\r\nSTORED\r\nVALUE b 3 1 1\r\nB\r\nVALUE c 4 2 2\r\nCC\r\nEND\r\nVALUE b 3 1\r\nB\r\nVALUE c 4 2\r\nCC\r\nEND\r\nVALUE b 3 1 1\r\nB\r\nVALUE c 4 2 2\r\nCC\r\nEND\r\n",
    ),
    (
        b"ms k 2 T100 F3\r\nhi\r\nmg k t f s v\r\nms k 2 T0\r\nhi\r\nmg k t f\r\n",
        b"HD\r\nVA 2 t100 f3 s2\r\nhi\r\nHD\r\nHD t-1 f0\r\n",
    ),
    (
        b"ms k 2 I\r\nhi\r\nmg k\r\nmd k I\r\nmd k I\r\nmg k c\r\nmg k c\r\n",
        b"HD\r\nHD\r\nHD\r\nHD\r\nHD c3 X W\r\nHD c3 Z X\r\n",
    ),
    (
        b"md k I C5\r\nms k 1\r\nx\r\nmg k c\r\nmd k I C1\r\nmd k C2 q\r\nmd k C1 q k O1\r\nmg k\r\n",
        b"NF\r\nHD\r\nHD c1\r\nHD\r\nNF kk O1\r\nEN\r\n",
    ),
    (b"mg k N10 R100 t\r\nmg k R100 t\r\nmg k R5 t\r\n", b"HD t10 W\r\nHD t10 Z\r\nHD t10 Z\r\n"),
    (b"mg k N10 t T20 t\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
    (b"mg k t N10\r\nmg k t\r\n", b"HD t-1 W\r\nHD t10 Z\r\n"),
    (b"mg k T20 N10 t\r\nmg k t\r\n", b"HD t10 W\r\nHD t10 Z\r\n"),
    (b"ma k N10 t T20\r\nmg k t\r\n", b"HD t10\r\nHD t20\r\n"),
    (b"ma k T20 N10 t\r\nmg k t\r\n", b"HD t10\r\nHD t10\r\n"),
    (
        b"mg k N10 O" + b"z" * 40 + b" T50\r\nmg k t\r\n",
        b"CLIENT_ERROR opaque token too long\r\nHD t10\r\n",
    ),
    (
        b"mg k T50 N10 O" + b"z" * 40 + b"\r\nmg k t\r\n",
        b"CLIENT_ERROR opaque token too long\r\nHD t10\r\n",
    ),
    (
        b"ms k 1 T100\r\nx\r\nmg k T50 O" + b"z" * 40 + b" t\r\nmg k t\r\n",
        b"HD\r\nCLIENT_ERROR opaque token too long\r\nHD t50\r\n",
    ),
    (
        b"ms k 1 T100\r\nx\r\nmg k O" + b"z" * 40 + b" T50 t\r\nmg k t\r\n",
        b"HD\r\nCLIENT_ERROR opaque token too long\r\nHD t100\r\n",
    ),
    (
        b"ms k 1\r\nx\r\nmg k O" + b"z" * 40 + b" h\r\nmg k h\r\n",
        b"HD\r\nCLIENT_ERROR opaque token too long\r\nHD h0\r\n",
    ),
    (
        b"ms k 1\r\nx\r\nmg k O" + b"z" * 40 + b"\r\nmg k h\r\n",
        b"HD\r\nCLIENT_ERROR opaque token too long\r\nHD h1\r\n",
    ),
    (
        b"ms k 1\r\nx\r\nma k\r\nma k O"
        + b"z" * 40
        + b"\r\nma k Onope q\r\nms n 1\r\n5\r\nma n O"
        + b"z" * 40
        + b" v\r\nmg n v\r\n",
        b"HD\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nHD\r\nCLIENT_ERROR opaque token too long\r\nVA 1\r\n6\r\n",
    ),
    (b"ms k 1\r\n5\r\nma k M-\r\nma k MD D10\r\nmg k v\r\n", b"HD\r\nHD\r\nHD\r\nVA 1\r\n0\r\n"),
    (
        b"ms k 1 O1 k c q\r\nx\r\nms k 1 O1 k c ME\r\nx\r\nmd k O1 k\r\nmd k O1 k q\r\n",
        b"NS O1 kk c0\r\nHD O1 kk\r\nNF O1 kk\r\n",
    ),
    (b"mn\r\nmn\r\n", b"MN\r\nMN\r\n"),
    (
        b"me k\r\nme\r\nme a b c\r\n",
        b"EN\r\nCLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\n",
    ),
    (b"mg a b c\r\n", b"CLIENT_ERROR error decoding key\r\n"),
    (b"mg a bcd\r\n", b"CLIENT_ERROR error decoding key\r\n"),
    (b"ms a 1 bcd\r\nx\r\n", b"CLIENT_ERROR error decoding key\r\n"),
    (b"ms a 0\r\n\r\nmg a v s\r\n", b"HD\r\nVA 0 s0\r\n\r\n"),
    (b"ms a 01 T+5 F+7\r\nx\r\nmg a f\r\n", b"HD\r\nHD f7\r\n"),
    (b"ms a 1 T\r\nx\r\nmn\r\n", b"CLIENT_ERROR bad token in command line format\r\nMN\r\n"),
    (b"ms a 1 C\r\nx\r\nmn\r\n", b"CLIENT_ERROR bad token in command line format\r\nMN\r\n"),
    (b"ms a 1 F\r\nx\r\nmn\r\n", b"CLIENT_ERROR bad command line format\r\nMN\r\n"),
    (b"ms a 1 N\r\nx\r\nmn\r\n", b"CLIENT_ERROR bad token in command line format\r\nMN\r\n"),
    (b"ms a 1 MA MA\r\nx\r\nmn\r\n", b"CLIENT_ERROR duplicate flag\r\nMN\r\n"),
    (b"ms a 1 Fx Tx\r\nx\r\nmn\r\n", b"CLIENT_ERROR bad token in command line format\r\nMN\r\n"),
    (b"ms a 1 Tx Fx\r\nx\r\nmn\r\n", b"CLIENT_ERROR bad token in command line format\r\nMN\r\n"),
    (b"ms a 1 Tx zz\r\nx\r\nmn\r\n", b"CLIENT_ERROR invalid flag\r\nMN\r\n"),
    (b"ms a 1 Tx MX\r\nx\r\nmn\r\n", b"CLIENT_ERROR bad token in command line format\r\nMN\r\n"),
    (
        b"ms a 1 MX O" + b"z" * 40 + b"\r\nx\r\nmn\r\n",
        b"CLIENT_ERROR invalid mode for ms M token\r\nMN\r\n",
    ),
    (
        b"ms a 1 O" + b"z" * 40 + b" MX\r\nx\r\nmn\r\n",
        b"CLIENT_ERROR invalid mode for ms M token\r\nMN\r\n",
    ),
    (
        b"mg a Tx Nx\r\nmg a b Tx\r\nmg a Tx b\r\nmg a Fx\r\nmg a Fx Tx\r\nmg a Tx Fx\r\n",
        b"CLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR error decoding key\r\nCLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR bad token in command line format\r\n",
    ),
    (
        b"ma a MX Dx\r\nma a Dx MX\r\nma a q MX\r\n",
        b"CLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid mode for ma M token\r\n",
    ),
    (
        b"set a 0 0 1\r\nx\r\nincr a 1\r\nma a\r\nmg a v\r\n",
        b"STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nVA 1\r\nx\r\n",
    ),
    (
        b"set a 0 0 1\r\n9\r\nincr a 1\r\nget a\r\nma a v\r\nmg a v\r\n",
        b"STORED\r\n10\r\nVALUE a 0 2\r\n10\r\nEND\r\nVA 2\r\n11\r\nVA 2\r\n11\r\n",
    ),
    (
        b"verbosity 0\r\nverbosity 5 noreply\r\nverbosity +1\r\nversion\r\n",
        b"OK\r\nOK\r\nVERSION 1.6.18\r\n",
    ),
    (b"get a b\r\nget a\r\nmn\r\n", b"END\r\nEND\r\nMN\r\n"),
    (
        b"cas a 0 0 1 1\r\nx\r\ncas a 0 0 1 0\r\nx\r\nset a 0 0 1\r\nx\r\ngets a\r\ncas a 0 0 1 1 noreply\r\ny\r\ngets a\r\n",
        b"NOT_FOUND\r\nNOT_FOUND\r\nSTORED\r\nVALUE a 0 1 1\r\nx\r\nEND\r\nVALUE a 0 1 2\r\ny\r\nEND\r\n",
    ),
    (
        b"set a 0 0 1\r\nx\r\nappend a 0 0 1\r\ny\r\ngets a\r\nprepend a 0 0 1\r\nz\r\ngets a\r\n",
        b"STORED\r\nSTORED\r\nVALUE a 0 2 2\r\nxy\r\nEND\r\nSTORED\r\nVALUE a 0 3 3\r\nzxy\r\nEND\r\n",
    ),
    (
        b"set k 0 0 10\r\n1234567890\r\nmg k s v\r\nmg k v s k f t c O9\r\n",
        b"STORED\r\nVA 10 s10\r\n1234567890\r\nVA 10 s10 kk f0 t-1 c1 O9\r\n1234567890\r\n",
    ),
    # the LRU crawler, and the key dumps of an empty cache
    (b"lru_crawler crawl 0\r\n", b"BADCLASS invalid class id\r\n"),
    (b"lru_crawler crawl 64\r\n", b"BADCLASS invalid class id\r\n"),
    (b"lru_crawler crawl abc\r\n", b"BADCLASS invalid class id\r\n"),
    (b"lru_crawler crawl 1,abc\r\n", b"BADCLASS invalid class id\r\n"),
    (b"lru_crawler crawl 1,,2\r\n", b"OK\r\n"),
    (b"lru_crawler crawl\r\n", b"ERROR\r\n"),
    (b"lru_crawler tocrawl 10\r\n", b"OK\r\n"),
    (b"lru_crawler tocrawl x\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"lru_crawler sleep 100\r\n", b"OK\r\n"),
    (b"lru_crawler sleep 1000001\r\n", b"CLIENT_ERROR sleep must be one second or less\r\n"),
    (b"lru_crawler sleep x\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"lru_crawler enable\r\n", b"ERROR failed to start lru crawler thread\r\n"),
    (b"lru_crawler foo\r\n", b"ERROR\r\n"),
    (b"lru_crawler\r\n", b"ERROR\r\n"),
    (b"lru_crawler metadump 0\r\n", b"BADCLASS invalid class id\r\n"),
    (b"lru_crawler metadump 64\r\n", b"BADCLASS invalid class id\r\n"),
    (b"lru_crawler metadump abc\r\n", b"BADCLASS invalid class id\r\n"),
    (b"lru_crawler metadump 63\r\n", b"END\r\n"),
    (b"lru_crawler metadump 1,,2\r\n", b"END\r\n"),
    (b"lru_crawler metadump\r\n", b"ERROR\r\n"),
    (b"lru_crawler metadump all extra\r\n", b"ERROR\r\n"),
    (b"stats cachedump 1\r\n", b"CLIENT_ERROR bad command line\r\n"),
    (b"stats cachedump a b\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"stats cachedump -1 0\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"stats cachedump 64 0\r\n", b"CLIENT_ERROR Illegal slab id\r\n"),
    (b"stats cachedump 63 0\r\n", b"END\r\n"),
    (b"stats cachedump 0 0\r\n", b"END\r\n"),
]


@pytest.mark.parametrize("transcript", TRANSCRIPTS, ids=lambda t: repr(t[0][:40]))
def test_replies_match_memcached(clock, transcript):
    data, expected, *closes = transcript
    client = Client(clock)
    assert client.send(data) == expected.replace(MEMCACHED_VERSION, OUR_VERSION)
    assert client.closed == bool(closes)


@pytest.mark.parametrize("transcript", TRANSCRIPTS[::7], ids=lambda t: repr(t[0][:40]))
def test_replies_match_memcached_fed_byte_by_byte(clock, transcript):
    data, expected, *_closes = transcript
    client = Client(clock)
    replies = b""
    for i in range(len(data)):
        if client.closed:
            break
        replies += client.send(data[i : i + 1])
    assert replies == expected.replace(MEMCACHED_VERSION, OUR_VERSION)


def test_large_values_and_refusals_as_memcached(client):
    # Recorded from memcached 1.6.18 with -I 1m, values of 2,000,000 bytes.
    big = b"x" * 2_000_000
    assert client.send(b"set a 0 0 1\r\nx\r\nset a 0 0 2000000\r\n" + big + b"\r\nget a\r\n") == (
        b"STORED\r\nSERVER_ERROR object too large for cache\r\nEND\r\n"  # a failed set drops a
    )
    assert client.send(b"set a 0 0 2000000 noreply\r\n" + big + b"\r\nmn\r\n") == b"MN\r\n"
    assert client.send(b"set a 0 0 2000000\r\n" + big + b"XYmn\r\n") == (
        b"SERVER_ERROR object too large for cache\r\nMN\r\n"  # the block is skipped unread
    )
    for kept in (b"append", b"add", b"replace"):
        assert client.send(b"set c 0 0 1\r\nz\r\n%b c 0 0 2000000\r\n" % kept + big + b"\r\n") == (
            b"STORED\r\nSERVER_ERROR object too large for cache\r\n"
        )
        assert client.send(b"get c\r\n") == b"VALUE c 0 1\r\nz\r\nEND\r\n"
    assert client.send(b"cas c 0 0 2000000 5\r\n" + big + b"\r\nget c\r\n") == (
        b"SERVER_ERROR object too large for cache\r\nVALUE c 0 1\r\nz\r\nEND\r\n"
    )
    # ms drops the old item whatever its mode; an error before that swallows the block.
    assert client.send(b"ms c 2000000 MA\r\n" + big + b"\r\nmg c v\r\n") == (
        b"SERVER_ERROR object too large for cache\r\nEN\r\n"
    )
    assert client.send(b"ms c 1\r\nx\r\nms c 2000000 zz\r\n" + big + b"\r\nmg c v\r\n") == (
        b"HD\r\nCLIENT_ERROR invalid flag\r\nVA 1\r\nx\r\n"
    )
    assert client.send(b"ms c 2000000 q\r\n" + big + b"\r\nmn\r\n") == (
        b"SERVER_ERROR object too large for cache\r\nMN\r\n"
    )
    assert client.counters()["store_too_large"] == 9  # every refusal but the one with a bad flag


def test_appending_past_the_item_size_is_not_stored(client):
    value = b"x" * 1_048_000
    assert client.send(b"set a 0 0 %d\r\n%b\r\n" % (len(value), value)) == b"STORED\r\n"
    assert client.send(b"append a 0 0 1000\r\n" + b"y" * 1000 + b"\r\n") == b"NOT_STORED\r\n"
    assert client.send(b"append a 0 0 300\r\n" + b"y" * 300 + b"\r\n") == b"STORED\r\n"


def test_a_line_too_long_closes_the_connection(client):
    assert client.send(b"set a 0 0 1\r\nx\r\n" + b"x" * 2049) == b"STORED\r\n"
    assert client.closed


def test_quit_closes_without_a_reply(client):
    assert client.send(b"set a 0 0 1\r\nx\r\nquit\r\nget a\r\n") == b"STORED\r\n"
    assert client.closed


# -- noreply -------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        b"set a 0 0 1 noreply\r\nx\r\n",
        b"add a 0 0 1 noreply\r\nx\r\n",  # NOT_STORED, silenced
        b"add new 0 0 1 noreply\r\nx\r\n",
        b"replace a 0 0 1 noreply\r\nx\r\n",
        b"replace nx 0 0 1 noreply\r\nx\r\n",
        b"append a 0 0 1 noreply\r\nx\r\n",
        b"prepend nx 0 0 1 noreply\r\nx\r\n",
        b"cas a 0 0 1 1 noreply\r\nx\r\n",  # EXISTS
        b"cas nx 0 0 1 1 noreply\r\nx\r\n",  # NOT_FOUND
        b"set a 0 0 1 noreply\r\nxyz\r\n",  # bad data chunk: "z\r\n" reads as a line
        b"incr n 1 noreply\r\n",
        b"incr a 1 noreply\r\n",  # non-numeric
        b"decr nx 1 noreply\r\n",
        b"incr n x noreply\r\n",
        b"delete a noreply\r\n",
        b"delete nx 0 noreply\r\n",
        b"delete a 5 noreply\r\n",
        b"touch a 10 noreply\r\n",
        b"touch nx 10 noreply\r\n",
        b"touch a x noreply\r\n",
        b"flush_all 10 noreply\r\n",
        b"verbosity 1 noreply\r\n",
        b"set " + b"k" * 251 + b" 0 0 -1 noreply\r\n",
    ],
)
def test_noreply_silences_every_reply_of_a_classic_command(client, command):
    client.send(b"set a 0 0 1\r\na\r\nset n 0 0 1\r\n1\r\n")
    replies = client.send(command + b"mn\r\n")
    if command.endswith(b"xyz\r\n"):
        assert replies == b"ERROR\r\nMN\r\n"  # the stray "z" line, as memcached answers it
    else:
        assert replies == b"MN\r\n"


def test_meta_quiet_mode_hides_only_the_nominal_reply(client):
    assert client.send(
        b"ms k 1 q\r\nx\r\n"  # HD: hidden
        b"ms k 1 q ME\r\nx\r\n"  # NS: shown
        b"mg k q v\r\n"  # a hit: shown
        b"mg nx q\r\n"  # EN: hidden
        b"md nx q\r\n"  # NF: shown
        b"ma k q\r\n"  # non-numeric: an error, shown
        b"ms n 1 q\r\n1\r\n"
        b"ma n q v\r\n"  # HD/VA: hidden
        b"md n q\r\n"  # HD: hidden
        b"mn\r\n"
    ) == (
        b"NS\r\nVA 1\r\nx\r\nNF\r\n"
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\nMN\r\n"
    )


# -- time ----------------------------------------------------------------------


def test_expiry_and_ttl_flags_follow_the_clock(client, clock):
    client.send(b"set a 0 10 1\r\nx\r\nms b 1 T100\r\nx\r\n")
    clock.advance(9)
    assert client.send(b"get a\r\nmg b t\r\n") == b"VALUE a 0 1\r\nx\r\nEND\r\nHD t91\r\n"
    clock.advance(1)
    assert client.send(b"get a\r\nmg a\r\n") == b"END\r\nEN\r\n"
    assert client.send(b"touch b 20\r\nmg b t\r\n") == b"TOUCHED\r\nHD t20\r\n"
    assert client.send(b"gat 30 b\r\nmg b t\r\n") == b"VALUE b 0 1\r\nx\r\nEND\r\nHD t30\r\n"
    absolute = int(clock()) + 50  # beyond 30 days: a Unix time
    assert client.send(b"gats %d b\r\nmg b t\r\n" % absolute) == (
        b"VALUE b 0 1 2\r\nx\r\nEND\r\nHD t50\r\n"
    )
    assert client.send(b"mg b T0 t\r\nme b\r\n") == (
        b"HD t-1\r\nME b exp=-1 la=0 cas=2 fetch=yes cls=1 size=61\r\n"
    )
    assert client.send(b"ms c 1 T-1\r\nx\r\nmg c\r\nset d 0 -1 1\r\nx\r\nget d\r\n") == (
        b"HD\r\nEN\r\nSTORED\r\nEND\r\n"
    )


def test_last_access_and_hit_before(client, clock):
    client.send(b"set a 0 0 1\r\nx\r\n")
    clock.advance(5)
    # h and l report the state before this request; u leaves it alone.
    assert client.send(b"mg a h l u\r\nmg a h l\r\nmg a h l\r\n") == (
        b"HD h0 l5\r\nHD h0 l5\r\nHD h1 l5\r\n"
    )
    clock.advance(60)  # a hit bumps the item at most once a minute, as memcached
    assert client.send(b"get a\r\nmg a l\r\n") == b"VALUE a 0 1\r\nx\r\nEND\r\nHD l0\r\n"
    clock.advance(3)
    assert client.send(b"me a\r\n") == b"ME a exp=-1 la=3 cas=1 fetch=yes cls=1 size=61\r\n"


def test_flush_all_with_a_delay(client, clock):
    client.send(b"set a 0 0 1\r\nx\r\n")
    assert client.send(b"flush_all 10\r\nget a\r\n") == b"OK\r\nVALUE a 0 1\r\nx\r\nEND\r\n"
    clock.advance(10)
    assert client.send(b"get a\r\n") == b"END\r\n"
    client.send(b"set a 0 0 1\r\nx\r\n")
    assert client.send(b"flush_all -1\r\nget a\r\n") == b"OK\r\nEND\r\n"


def test_recache_wins_once_the_ttl_runs_low(client, clock):
    client.send(b"ms k 1 T100\r\nx\r\n")
    assert client.send(b"mg k R30 t\r\n") == b"HD t100\r\n"
    clock.advance(75)
    assert client.send(b"mg k R30 t\r\nmg k R30 t\r\nmg k\r\n") == (
        b"HD t25 W\r\nHD t25 Z\r\nHD Z\r\n"
    )
    assert client.send(b"ms k 1 T100\r\ny\r\nmg k R30\r\n") == b"HD\r\nHD\r\n"  # a new item


def test_invalidation_serves_stale_data_to_one_recacher(client, clock):
    client.send(b"ms k 5 T100\r\nhello\r\n")
    assert client.send(b"md k I T30\r\nmg k v c t\r\nmg k v\r\n") == (
        b"HD\r\nVA 5 c2 t30 X W\r\nhello\r\nVA 5 Z X\r\nhello\r\n"
    )
    # The recacher's set with the CAS it read replaces the stale item.
    assert client.send(b"ms k 5 C2\r\nfresh\r\nmg k v\r\n") == b"HD\r\nVA 5\r\nfresh\r\n"
    assert client.send(b"md k I T10\r\n") == b"HD\r\n"
    clock.advance(10)
    assert client.send(b"mg k\r\n") == b"EN\r\n"


def test_vivify_on_miss_hands_out_one_win(client, clock):
    assert client.send(b"mg k N30 v t c\r\nmg k N30 t\r\nget k\r\n") == (
        b"VA 0 t30 c1 W\r\n\r\nHD t30 Z\r\nVALUE k 0 0\r\n\r\nEND\r\n"
    )
    clock.advance(30)
    assert client.send(b"mg k N30 c\r\n") == b"HD c2 W\r\n"
    assert client.send(b"ma n N0 J10 v\r\nma n v\r\n") == b"VA 2\r\n10\r\nVA 2\r\n11\r\n"


# -- statistics ----------------------------------------------------------------


def test_text_commands_count_like_memcached(client):
    client.send(
        b"set a 0 0 1\r\n1\r\n"
        b"get a b\r\n"  # a hit and a miss
        b"gets a\r\n"
        b"gat 10 a b\r\n"  # touches, not gets
        b"touch a 10\r\n"
        b"incr a 1\r\nincr b 1\r\ndecr a 1\r\ndecr b 1\r\n"
        b"cas a 0 0 1 999\r\nx\r\ncas b 0 0 1 1\r\nx\r\ncas a 0 0 1 1\r\nx\r\n"
        b"delete a\r\ndelete a\r\n"
        b"flush_all\r\n"
        b"mg k\r\nms k 1\r\nx\r\nmg k\r\nmg k T5\r\nmg nx T5\r\n"
        b"md k C1\r\nmd k I\r\nmd k\r\nmd k\r\n"
        b"ma k\r\nma k N0\r\nma k MD\r\n"
        b"ms k 1 C1\r\nx\r\nms nx 1 C1\r\nx\r\n"
    )
    counters = client.counters()
    # What memcached 1.6.18's stats said after the same requests.
    assert {name: counters[name] for name in counters if counters[name]} == {
        "cmd_get": 6,
        "get_hits": 3,
        "get_misses": 3,
        "cmd_touch": 4,
        "touch_hits": 3,
        "touch_misses": 1,
        "cmd_set": 7,
        "incr_hits": 1,
        "incr_misses": 2,
        "decr_hits": 2,
        "decr_misses": 1,
        "cas_badval": 3,
        "cas_misses": 2,
        "delete_hits": 2,
        "delete_misses": 3,
        "cmd_flush": 1,
    }


def test_stats_groups_render_as_text(client):
    replies = client.send(b"stats\r\n")
    assert replies.startswith(b"STAT pid ") and replies.endswith(b"\r\nEND\r\n")
    assert b"STAT version 1.6.18\r\n" in replies
    assert client.send(b"stats settings\r\n").startswith(b"STAT maxbytes 67108864\r\n")
    assert client.send(b"stats reset\r\n") == b"RESET\r\n"
    assert client.send(b"stats nosuch\r\n") == b"ERROR\r\n"
    assert client.send(b"stats sizes\r\n") == b"END\r\n"


# -- one store for both protocols --------------------------------------------


def test_an_item_set_over_text_reads_back_identically_over_binary(client):
    client.send(b"set k 123 0 5\r\nhello\r\n")
    parser = BinaryParser(client.settings.max_item_size)
    parser.feed(packets.get(b"k", opcode=packets.GETK))
    run = parser.next()
    out: list = []
    write_gets(run, client.commands.get_many(run.keys), out)
    (response,) = packets.responses(b"".join(bytes(part) for part in out))
    assert (response.key, response.flags, response.value) == (b"k", 123, b"hello")
    assert client.send(b"gets k\r\n") == b"VALUE k 123 5 %d\r\nhello\r\nEND\r\n" % response.cas


def test_an_item_set_over_binary_reads_back_identically_over_text(client):
    parser = BinaryParser(client.settings.max_item_size)
    parser.feed(packets.set_(b"k", b"hello", flags=7, expiry=100))
    client.commands.execute(parser.next())
    assert client.send(b"gets k\r\nmg k t f c v\r\n") == (
        b"VALUE k 7 5 1\r\nhello\r\nEND\r\nVA 5 t100 f7 c1\r\nhello\r\n"
    )


# -- what the store keeps for the meta commands --------------------------------


@pytest.fixture
def store(clock) -> Store:
    store = Store(clock=clock)
    store.track_fetches()
    return store


def test_unread_items_are_tracked_only_once_a_meta_command_is_used(clock):
    client = Client(clock)
    client.store._track_fetches = False  # a server whose clients never used meta commands
    client.send(b"set classic 0 0 1\r\nx\r\n")
    assert client.store._unfetched == set()  # get/set alone cost nothing
    assert client.send(b"ms new 1\r\ny\r\nmg new h\r\n") == b"HD\r\nHD h0\r\n"
    assert client.send(b"mg classic h\r\n") == b"HD h1\r\n"  # stored before: counted as read


def test_an_item_counts_as_fetched_once_read(store):
    store.store(Mode.SET, b"k", b"1")
    assert not store.fetched(b"k")
    assert store.lookup(b"k") is not None and not store.fetched(b"k")  # a peek is no read
    store.get_many([b"k"])
    assert store.fetched(b"k")
    store.arith(b"k", True, 1)  # rewritten in place: the same item
    assert store.fetched(b"k")
    store.arith(b"k", True, 100)  # longer: a new item, as in memcached
    assert not store.fetched(b"k")
    store.touch(b"k", 10)
    assert store.fetched(b"k")
    store.store(Mode.APPEND, b"k", b"0")
    assert not store.fetched(b"k")
    store.get_many([b"k"])
    store.flush()
    store.store(Mode.SET, b"k", b"1")
    assert not store.fetched(b"k")


def test_marks_belong_to_one_item(store, clock):
    store.store(Mode.SET, b"k", b"1", ttl=100)
    store.set_marks(b"k", STALE | WIN_SENT)
    store.arith(b"k", True, 1)
    store.touch(b"k", 50)
    store.set_expiry(b"k", 0)
    assert store.marks(b"k") == STALE | WIN_SENT
    store.store(Mode.SET, b"k", b"new")
    assert store.marks(b"k") == 0
    for remove in (
        lambda: store.delete(b"k"),
        lambda: store.flush(),
        lambda: clock.advance(11),  # expires
    ):
        store.store(Mode.SET, b"k", b"1", ttl=10)
        store.set_marks(b"k", KEY_BINARY)
        remove()
        assert store.lookup(b"k") is None
        assert store.marks(b"k") == 0
    assert not store._marks and not store._unfetched


def test_invalidate(store):
    assert store.invalidate(b"k") == (NOT_FOUND, 0)
    _, cas = store.store(Mode.SET, b"k", b"v", flags=3, ttl=100)
    store.set_marks(b"k", WIN_SENT)
    assert store.invalidate(b"k", cas + 1) == (EXISTS, 0)
    status, new_cas = store.invalidate(b"k", cas, ttl=30)
    assert status is OK and new_cas > cas
    assert store.marks(b"k") == STALE  # the win token can be won again
    item = get_item(store, b"k")
    assert (item.value, item.flags, item.cas) == (b"v", 3, new_cas)
    assert item.exptime == int(store.clock()) + 30


def test_store_stale_keeps_expiry_and_win_token(store):
    store.store(Mode.SET, b"other", b"x")
    _, cas = store.store(Mode.SET, b"k", b"old", ttl=100)
    store.set_marks(b"k", WIN_SENT)
    assert store.store_stale(b"k", b"new", 5, cas) == (EXISTS, 0)  # not older
    assert store.store_stale(b"nx", b"new", 5, 1) == (NOT_FOUND, 0)
    status, new_cas = store.store_stale(b"k", b"new", 5, cas - 1)
    assert status is OK and new_cas > cas
    item = get_item(store, b"k")
    assert (item.value, item.flags, item.exptime) == (b"new", 5, int(store.clock()) + 100)
    assert store.marks(b"k") == STALE | WIN_SENT


def test_vivify_and_set_expiry(store, clock):
    store.store(Mode.SET, b"old", b"x")
    rec = store.vivify(b"k")
    assert rec[20:] == b"" and get_item(store, b"k").flags == 0
    assert store.total_items == 2
    clock.advance(100)
    store.set_expiry(b"k", int(clock()) + 5)
    # Not an access: the item keeps its last-access time and LRU place.
    assert store.lookup(b"k")[4:8] == rec[4:8]
    assert [k for k, _ in store.items()] == [b"old", b"k"]
    clock.advance(5)
    assert store.lookup(b"k") is None


def test_the_unfetched_set_shrinks_back_under_memory_pressure(clock):
    value = b"v" * 32
    store = Store(limit_bytes=50_000 * item_size(b"key:0000000", value), clock=clock)
    store.track_fetches()
    for i in range(50_000):
        store.store(Mode.SET, b"key:%07d" % i, value)
    store.get_many([b"key:%07d" % i for i in range(50_000)])  # all read: the set is empty
    for i in range(50_000, 51_000):  # and now full: evictions
        store.store(Mode.SET, b"key:%07d" % i, value)
    assert store.evictions
    assert sys.getsizeof(store._unfetched) < 64 * 1000 + (1 << 16)


def test_gat_many_touches_and_counts(client):
    client.send(b"set a 0 0 1\r\nx\r\n")
    records = client.commands.gat_many([b"a", b"b"], 100)
    assert records[0][20:] == b"x" and records[1] is None
    assert (client.stats.cmd_touch, client.stats.touch_hits, client.stats.touch_misses) == (2, 1, 1)
    assert get_item(client.store, b"a").exptime == int(client.clock()) + 100


# -- arbitrary input, all the way through ---------------------------------------

TOKENS = st.sampled_from(
    [
        b"get",
        b"gets",
        b"gat",
        b"gats",
        b"set",
        b"add",
        b"replace",
        b"append",
        b"prepend",
        b"cas",
        b"incr",
        b"decr",
        b"delete",
        b"touch",
        b"flush_all",
        b"stats",
        b"verbosity",
        b"version",
        b"mg",
        b"ms",
        b"md",
        b"ma",
        b"mn",
        b"me",
        b"noreply",
        b"k",
        b"j",
        b"czE=",
        b"0",
        b"1",
        b"2",
        b"3",
        b"-1",
        b"99",
        b"4294967296",
        b"v",
        b"q",
        b"b",
        b"c",
        b"f",
        b"h",
        b"l",
        b"s",
        b"t",
        b"u",
        b"k",
        b"O1",
        b"T5",
        b"T-1",
        b"N5",
        b"R50",
        b"C1",
        b"C0",
        b"I",
        b"MA",
        b"ME",
        b"MP",
        b"MR",
        b"MD",
        b"M-",
        b"D5",
        b"J7",
        b"F3",
        b"\r\n",
        b"\r\n",
        b"\r\n",
        b"xyz",
        b"12",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    script=st.lists(TOKENS, max_size=80).map(b" ".join),
    steps=st.lists(st.integers(min_value=0, max_value=30), max_size=20),
)
def test_arbitrary_commands_run_end_to_end(script, steps):
    clock = FakeClock()
    client = Client(clock, max_item_size=1024)
    pos = 0
    for step in [*steps, len(script)]:
        if client.closed:
            break
        client.send(script[pos : pos + step + 1])  # asserts the lock is free and counts add up
        pos += step + 1
        clock.advance(step)
