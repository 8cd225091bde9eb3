"""What the whole suite's collection leaves out.

tests/plugin_sample is another project's test suite, run only in a
subprocess by the plugin and packaging tests (some of its tests fail or
interrupt the run on purpose).
"""

collect_ignore = ["plugin_sample"]
