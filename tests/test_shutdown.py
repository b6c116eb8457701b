"""search.shutdown: how the driver's process ends, normally and once its storage stopped answering (in a child
process: it ends the process it runs in)."""
import subprocess
import sys

CHILD = """
import subprocess, sys, time
from search import shutdown
from search.spec import RunOptions
options = RunOptions(name="e", storage_path="s3://b/runs", storage_arg="s3://b/runs", address=None, resume=False,
                     max_failures=3, concurrency=None, dashboard=False, dashboard_host="127.0.0.1", verbose=False)
child = subprocess.Popen(["sleep", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
if sys.argv[1] == "lost":
    shutdown.storage_lost(options, "no answer within 20 s")
shutdown.end_process(int(sys.argv[1]))
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_a_lost_storage_ends_the_process_with_one_message_its_children_stopped():
    r = subprocess.run([sys.executable, "-c", CHILD, "lost"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip() == ("error: the storage s3://b/runs/e stopped answering during the search (no answer "
                                "within 20 s); the search stopped there. When it answers again, continue with  "
                                "python -m search.run --name e --resume --storage-path s3://b/runs")
    assert not alive(int(r.stdout.split()[0]))  # the process's children are sent SIGTERM


def test_a_normal_end_keeps_main_s_exit_code():
    r = subprocess.run([sys.executable, "-c", CHILD, "3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and r.stderr == ""
    subprocess.run(["kill", r.stdout.split()[0]])
