from agents.diffparse import added_lines, changed_paths, parse_diff

TWO_FILES = """\
diff --git a/pkg/a.py b/pkg/a.py
index 111..222 100644
--- a/pkg/a.py
+++ b/pkg/a.py
@@ -1,4 +1,5 @@
 import os
-import sys
+import sys  # changed
+import re

 def f():
@@ -10,2 +11,3 @@ def f():
     x = 1
+    y = 2
     return x
diff --git a/new.py b/new.py
new file mode 100644
--- /dev/null
+++ b/new.py
@@ -0,0 +1,2 @@
+print(1)
+print(2)
\\ No newline at end of file
diff --git a/gone.py b/gone.py
deleted file mode 100644
--- a/gone.py
+++ /dev/null
@@ -1,1 +0,0 @@
-x = 1
"""


def test_added_lines_per_path_follow_hunk_numbering():
    assert added_lines(TWO_FILES) == {"pkg/a.py": {2, 3, 12}, "new.py": {1, 2}}


def test_parse_keeps_text_of_added_and_removed_lines_and_deletions():
    files = parse_diff(TWO_FILES)
    assert [(f.path, f.old_path) for f in files] == [
        ("pkg/a.py", "pkg/a.py"), ("new.py", None), (None, "gone.py")]
    assert files[0].added[3] == "import re"
    assert files[0].removed == ["import sys"]
    assert changed_paths(TWO_FILES) == ["pkg/a.py", "new.py", "gone.py"]


def test_header_lookalikes_inside_a_hunk_are_content():
    diff = ("--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,2 @@\n"
            "--- a/evil.py\n"  # a removed line whose text is "-- a/evil.py"
            "+++ b/evil.py\n"  # an added line whose text is "++ b/evil.py"
            " tail\n")
    assert added_lines(diff) == {"x.py": {1}}
    assert parse_diff(diff)[0].added == {1: "++ b/evil.py"}


def test_hunk_without_counts_and_timestamps_and_quoted_names():
    diff = ('--- "a/caf\\303\\251.py"\t2024-01-01\n+++ "b/caf\\303\\251.py"\t2024-01-02\n'
            "@@ -5 +7 @@\n-old\n+new\n")
    assert added_lines(diff) == {"café.py": {7}}


def test_truncated_or_garbage_input_never_raises():
    assert added_lines("") == {}
    assert added_lines("not a diff at all\n@@ nonsense @@\n") == {}
    truncated = "--- a/x.py\n+++ b/x.py\n@@ -1,10 +1,10 @@\n+a\n+b"
    assert added_lines(truncated) == {"x.py": {1, 2}}


def test_crlf_and_form_feed_do_not_shift_numbering():
    diff = "--- a/x.py\r\n+++ b/x.py\r\n@@ -1,2 +1,3 @@\r\n a\x0cb\r\n+c\r\n d\r\n"
    files = parse_diff(diff)
    assert files[0].path == "x.py"
    assert files[0].added == {2: "c"}
