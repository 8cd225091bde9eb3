"""bench/jitprofile.py's map from an address in PyPy's JIT code to the Python function it runs.

The profile itself needs perf and PyPy and is run by hand; what is checked
here is the reading of PYPYLOG, on a log cut down from a real one: a
trace's +offsets count from its block's start (the gc table address), not
from the loop's bootstrap, and a sample belongs to the last merge point at
or before its operation.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
try:
    from jitprofile import CodeMap, function_of, report
finally:
    sys.path.remove(str(BENCH))

LOG = """\
[3e9307649690] {jit-backend-addr
Loop 52 (_on_ready;/srv/mbserver/ready.py:67-69~#18 FOR_ITER) has address 0x7000100 to 0x7000400 (bootstrap 0x7000080)
       gc table: 0x7000000
       function: 0x7000080
         resops: 0x7000100
[3e9307655ddc] jit-backend-addr}
[3e9307656000] {jit-log-opt-loop
# Loop 52 (_on_ready;/srv/mbserver/ready.py:67-69~#18 FOR_ITER) : loop with 5 ops
[p0, p1]
+256: p2 = getfield_gc_r(p0, descr=<FieldP pypy.interpreter.pyframe.PyFrame.inst_pycode 64>)
debug_merge_point(0, 0, '_on_ready;/srv/mbserver/ready.py:67-72~#30 CALL_METHOD')
+300: p3 = getinteriorfield_gc_r(p2, i1, descr=<InteriorFieldDescr <FieldP odictentry.value 8>>)
debug_merge_point(1, 1, 'on_readable;/srv/mbserver/connection.py:417-424~#8 LOAD_FAST')
debug_merge_point(1, 1, 'on_readable;/srv/mbserver/connection.py:417-425~#10 CALL_FUNCTION')
+340: p4 = call_may_force_r(ConstClass(read), i5, 16384, descr=<Callr 8 ii EF=7>)
+500: guard_no_exception(descr=<Guard0x55d47b278d58>) [p0]
debug_merge_point(0, 0, 'unpackiterable [dict_keyiterator]')
+600: jump(p0, p1, descr=TargetToken(1))
[3e9307657000] jit-log-opt-loop}
[3e9307658000] {jit-backend-addr
bridge out of Guard 0x55d47b278d58 has address 0x7100040 to 0x7100100
       gc table: 0x7100000
    jump target: 0x7100040
[3e9307659000] jit-backend-addr}
[3e930765a000] {jit-log-opt-bridge
# bridge out of Guard 0x55d47b278d58 with 2 ops
[p0]
debug_merge_point(2, 2, 'get_record;/srv/mbserver/store.py:299-306~#40 LOAD_ATTR')
+64: p6 = getfield_gc_r(p0, descr=<FieldP list.items 16>)
+90: jump(p6, descr=TargetToken(2))
[3e930765b000] jit-log-opt-bridge}
"""


def test_an_address_maps_to_the_operation_whose_code_holds_it_counting_from_the_gc_table():
    code = CodeMap(LOG)
    # 0x7000000 + 300: the second operation, under the first merge point.
    operation = code.operation(0x7000000 + 300)
    assert operation.offset == 300 and operation.where == "_on_ready ready.py:72"
    # Anywhere up to the next operation's offset is still that operation.
    assert code.operation(0x7000000 + 339).offset == 300
    # The last merge point before an operation wins; one without a file
    # (a builtin's) leaves the Python function as it was.
    assert code.operation(0x7000000 + 400).where == "on_readable connection.py:425"
    assert code.operation(0x7000000 + 0x3FF).where == "on_readable connection.py:425"
    # A bridge counts from its own gc table.
    assert code.operation(0x7100000 + 70).where == "get_record store.py:306"


def test_addresses_outside_the_jits_code_map_to_nothing():
    code = CodeMap(LOG)
    assert code.operation(0x400000) is None  # below every block
    assert code.operation(0x7000400) is None  # just past the loop
    assert code.operation(0x7000100 - 1) is None  # the block's head, before its resops
    assert code.operation(0x7200000) is None  # past every block


def test_the_operations_before_one_come_with_it():
    code = CodeMap(LOG)
    context = code.context(0x7000000 + 500)
    assert [operation.offset for operation in context] == [256, 300, 340, 500]
    assert code.context(0x400000) == []  # outside the JIT's code


def test_the_report_counts_samples_by_function_and_by_object_in_microseconds_a_request():
    code = CodeMap(LOG)
    samples = [
        (0x7000000 + 340, "[JIT] tid 1"),
        (0x7000000 + 500, "[JIT] tid 1"),
        (0x7100000 + 64, "[JIT] tid 1"),
        (0x2211000, "/usr/lib/x86_64-linux-gnu/libpypy3.9-c.so"),
        (0x7F0000000000, "[JIT] tid 1"),  # compiled code the log does not list
        (0x7F0000000001, "/tmp/perf-8362.map"),  # the same, as perf may name it
    ]
    text = report(code, samples, served=500, ops_of="on_readable", top=10)
    lines = text.splitlines()
    assert lines[0] == "6 samples of user time at 4000 Hz, 500 requests served meanwhile"
    # One sample at 4,000 Hz over 500 requests is 0.5 µs a request.
    assert "       1.000  33.3%  JIT: on_readable connection.py" in lines
    assert "       0.500  16.7%  JIT: get_record store.py" in lines
    assert "       0.500  16.7%  libpypy3.9-c.so" in lines
    assert "       1.000  33.3%  JIT code not in the log" in lines
    assert "16.7%  on_readable connection.py:425" in text
    assert "        +340: p4 = call_may_force_r(ConstClass(read), i5, 16384" in text


def test_a_function_is_named_without_its_line():
    assert function_of("get_record store.py:312") == "get_record store.py"
