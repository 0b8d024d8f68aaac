<?php
// A warm php for one function (a fork server), run by reference/worker/warm/runtimes.py inside the
// function's sandbox, as its uid: php starts once, then forks a fresh child per call (pcntl) that
// writes the function's code into its call directory and includes it at global scope, as
// `php code.php` would run it. The function's code never runs in this process, so no global,
// static, class or file of one call reaches the next. Not dumpable: no call may ptrace it or
// read its memory.
//
// Same protocol as warm_python.py (its docstring has it), over the SOCK_SEQPACKET socket whose
// fd is argv[1]; the descriptors travel by SCM_RIGHTS, received and put in place through FFI on
// libc (php has no recvmsg with fds nor dup2). argv[2]: the worker's pid to check as parent
// ("0": none, in a sandbox); argv[3]: "sandbox" when /tmp and /dev/shm are the sandbox's own,
// emptied after every call; argv[4], optional: where php keeps its exit status (below). The
// ready message also says it ("status_offset"). The function's source arrives on stdin at start-up.
//
// Everything of ours is local to functions named minifaas_*: the call's code sees only the
// usual globals ($argv, $argc, $_SERVER...).

function minifaas_libc()
{
    static $libc = null;
    if ($libc === null) {
        $libc = FFI::cdef('
            typedef unsigned long size_t;
            typedef long ssize_t;
            struct iovec { void *iov_base; size_t iov_len; };
            struct msghdr { void *msg_name; unsigned int msg_namelen; struct iovec *msg_iov; size_t msg_iovlen;
                            void *msg_control; size_t msg_controllen; int msg_flags; };
            struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; };
            struct rlimit { unsigned long rlim_cur; unsigned long rlim_max; };
            ssize_t recvmsg(int fd, struct msghdr *msg, int flags);
            ssize_t send(int fd, const char *buf, size_t len, int flags);
            ssize_t write(int fd, const char *buf, size_t len);
            int close(int fd);
            int dup2(int from, int to);
            int setsid(void);
            int setpgid(int pid, int pgid);
            int getsid(int pid);
            int getppid(void);
            int kill(int pid, int sig);
            int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5);
            int setrlimit(int resource, const struct rlimit *rlim);
            int close_range(unsigned int first, unsigned int last, int flags);
            int pipe(int fds[2]);
            ssize_t read(int fd, char *buf, size_t len);
            int fflush(void *stream);
            void _exit(int status);
        ', "libc.so.6");
    }
    return $libc;
}

const MINIFAAS_PR_SET_PDEATHSIG = 1;
const MINIFAAS_PR_SET_DUMPABLE = 4;
const MINIFAAS_PR_SET_CHILD_SUBREAPER = 36;
const MINIFAAS_MSG_NOSIGNAL = 0x4000;
const MINIFAAS_REAP_DEADLINE_S = 5.0;
// The call's output passes through our buffer at once (a chunk of 1): nothing waits in it, so
// a call that cleans every buffer loses nothing of what it wrote before, as with a plain php.
const MINIFAAS_OUTPUT_CHUNK = 1;

// A call ends as php's exit would, without php's module shutdown: the process is thrown away, and
// tearing the interpreter down costs about 3 ms of CPU a call (ten times the fork), most of it
// copy-on-write faults on the pages it frees. What a script can see of its end (shutdown
// functions, destructors, output buffers, in that order) still runs: the call's outermost output
// buffer is ours, and when php ends it, after the destructors, it writes what is left and leaves
// with php's own exit status, read from executor_globals at the offset minifaas_status_offset()
// found. When that offset is unknown, or the call left a process php would wait for at its
// shutdown (proc_open, popen), or took our buffer away, the call ends the ordinary way. The one
// thing a script can see of it: ob_get_level() starts at 1, not 0.

// The offset of EG(exit_status) in executor_globals: the only int there that is 201 and then 77
// in probe children that exit with those; null when the probes do not agree on exactly one.
function minifaas_status_offset()
{
    $libc = minifaas_libc();
    $found = null;
    foreach ([201, 77] as $value) {
        $fds = $libc->new("int[2]");
        if ($libc->pipe($fds) !== 0) {
            return null;
        }
        $pid = pcntl_fork();
        if ($pid === 0) {
            register_shutdown_function(function () use ($libc, $fds, $value) {
                $eg = FFI::cdef("extern unsigned char executor_globals[4096];");
                $hits = [];
                for ($i = 0; $i + 4 <= 2048; $i += 4) {
                    $b = $eg->executor_globals;
                    if (($b[$i] | $b[$i + 1] << 8 | $b[$i + 2] << 16 | $b[$i + 3] << 24) === $value) {
                        $hits[] = $i;
                    }
                }
                $text = json_encode($hits);
                $libc->write($fds[1], $text, strlen($text));
                $libc->_exit(0);
            });
            exit($value);
        }
        $libc->close($fds[1]);
        $buf = FFI::new("char[4096]");
        $n = $libc->read($fds[0], $buf, 4096);
        $libc->close($fds[0]);
        pcntl_waitpid($pid, $ignored);
        $hits = $n > 0 ? json_decode(FFI::string($buf, $n), true) : [];
        $found = $found === null ? $hits : array_values(array_intersect($found, $hits));
    }
    return count($found) === 1 ? $found[0] : null;
}

// In the call's process, before its code: our output buffer at the bottom of the stack.
function minifaas_fast_end($offset)
{
    if ($offset === null) {
        return;
    }
    minifaas_ending(false, $offset);
    register_shutdown_function(function () {
        minifaas_ending(true);
    });
    ob_start("minifaas_output", MINIFAAS_OUTPUT_CHUNK);
}

function minifaas_ending($set = null, $offset = null)
{
    static $ending = false, $where = null;
    if ($offset !== null) {
        $where = $offset;
    }
    if ($set !== null) {
        $ending = $set;
    }
    return [$ending, $where];
}

function minifaas_output($buffer, $phase)
{
    [$ending, $offset] = minifaas_ending();
    if (!$ending || !($phase & PHP_OUTPUT_HANDLER_FINAL) || ($phase & PHP_OUTPUT_HANDLER_CLEAN)) {
        return $buffer;
    }
    foreach (get_resources() as $resource) {
        $type = get_resource_type($resource);
        if ($type === "process" || ($type === "stream" && !isset(stream_get_meta_data($resource)["wrapper_type"]))) {
            return $buffer;     // php waits for those at its shutdown: so do we
        }
    }
    $libc = minifaas_libc();
    for ($done = 0, $size = strlen($buffer); $done < $size; $done += $n) {
        $rest = substr($buffer, $done);
        $n = $libc->write(1, $rest, strlen($rest));
        if ($n <= 0) {
            break;
        }
    }
    $libc->fflush(null);
    $eg = FFI::cdef("extern int executor_globals[1024];");   // 4 KiB: runtimes.STATUS_OFFSET_MAX
    $libc->_exit($eg->executor_globals[intdiv($offset, 4)] & 0xFF);
}

function minifaas_send($sock, $data)
{
    $message = json_encode($data);
    if (minifaas_libc()->send($sock, $message, strlen($message), MINIFAAS_MSG_NOSIGNAL) < 0) {
        exit(0);                    // the worker went away
    }
}

// One packet and the descriptors that came with it, or null when the worker closed the socket.
function minifaas_recv($sock)
{
    $libc = minifaas_libc();
    static $buf = null, $ctl = null, $iov = null, $msg = null;
    if ($buf === null) {
        $buf = FFI::new("char[65536]");
        $ctl = FFI::new("char[512]");
        $iov = $libc->new("struct iovec");
        $msg = $libc->new("struct msghdr");
    }
    $iov->iov_base = FFI::addr($buf);
    $iov->iov_len = 65536;
    $msg->msg_iov = FFI::addr($iov);
    $msg->msg_iovlen = 1;
    $msg->msg_control = FFI::addr($ctl);
    $msg->msg_controllen = 512;
    $n = $libc->recvmsg($sock, FFI::addr($msg), 0);
    if ($n <= 0) {
        return null;
    }
    $fds = [];
    $len = $msg->msg_controllen;
    for ($off = 0; $off + 16 <= $len;) {
        $head = $libc->cast("struct cmsghdr *", FFI::addr($ctl[$off]));
        $size = $head->cmsg_len;
        if ($size < 16) {
            break;
        }
        if ($head->cmsg_level === 1 && $head->cmsg_type === 1) {    // SOL_SOCKET, SCM_RIGHTS
            $ints = FFI::cast("int *", FFI::addr($ctl[$off + 16]));
            for ($i = 0; $i < intdiv($size - 16, 4); $i++) {
                $fds[] = $ints[$i];
            }
        }
        $off += ($size + 7) & ~7;
    }
    return [FFI::string($buf, $n), $fds];
}

// Keep PATH and the function's own variables, which the worker names in MINIFAAS_ENV; drop the
// rest, which the start added (bwrap's PWD): from the process (putenv), $_SERVER and $_ENV.
function minifaas_own_environment()
{
    $names = getenv("MINIFAAS_ENV");
    if ($names === false) {
        return;                     // not started by a worker: leave it as it is
    }
    $keep = array_flip(array_merge(explode(",", $names), ["PATH"]));
    foreach (array_keys(getenv()) as $name) {
        if (!isset($keep[$name])) {
            putenv($name);
            unset($_SERVER[$name], $_ENV[$name]);
        }
    }
}

// Answer calls until the worker goes away. Returns only in a forked child, set up for its call.
function minifaas_serve()
{
    minifaas_own_environment();
    $libc = minifaas_libc();
    $argv = $_SERVER["argv"];
    $sock = (int) $argv[1];
    // Die with the worker, even if it died before the prctl (then we are already orphaned).
    $libc->prctl(MINIFAAS_PR_SET_PDEATHSIG, 9, 0, 0, 0);
    if ($argv[2] !== "0" && $libc->getppid() !== (int) $argv[2]) {
        exit(0);
    }
    $libc->prctl(MINIFAAS_PR_SET_DUMPABLE, 0, 0, 0, 0);
    $libc->prctl(MINIFAAS_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    // The leader of a session with no terminal, where the calls' process groups live: the
    // worker starts us so; this makes sure (warm_python.py's own_session).
    if ($libc->getsid(0) !== getmypid()) {
        $libc->setsid();
    }
    // The init of its sandbox's pid namespace (bwrap --as-pid-1): its death kills every call.
    $init = getmypid() === 1;
    // A stream of its own on fd 0: the STDIN constant stays untouched for the calls.
    $in = fopen("php://fd/0", "r");
    $source = stream_get_contents($in);
    fclose($in);
    $private = ($argv[3] ?? "") === "sandbox";
    // argv[4]: the offset a previous fork server of this worker found, else we probe.
    $offset = isset($argv[4]) ? (int) $argv[4] : minifaas_status_offset();
    if ($offset !== null && ($offset < 0 || $offset >= 4096 || $offset % 4 !== 0)) {
        $offset = null;
    }
    minifaas_send($sock, ["ready" => true, "status_offset" => $offset]);
    while (true) {
        $got = minifaas_recv($sock);
        if ($got === null) {
            exit(0);                // the worker closed the socket: nothing more to serve
        }
        [$message, $fds] = $got;
        $call = json_decode($message, true);
        if (!empty($call["make"])) {
            @mkdir($call["dir"], 0700);     // in our own tmpfs; the call reports it when it cannot enter it
        }
        $pid = pcntl_fork();
        if ($pid === 0) {
            minifaas_become_call($call, $fds, $source, $init);
            minifaas_fast_end($offset);
            return;
        }
        foreach ($fds as $fd) {
            $libc->close($fd);
        }
        if ($pid < 0) {
            exit(1);                // the worker sees the fork server gone and starts another
        }
        $status = minifaas_reap($pid);
        if (!empty($call["make"])) {
            minifaas_remove($call["dir"]);
        }
        if ($private) {
            foreach (["/tmp", "/dev/shm"] as $top) {
                foreach (@scandir($top) ?: [] as $name) {
                    if ($name !== "." && $name !== "..") {
                        minifaas_remove($top . "/" . $name);
                    }
                }
            }
        }
        minifaas_send($sock, ["status" => $status]);
    }
}

// Wait for the call's process, then kill what it left: its group, and any descendant that left
// the group (as subreaper we inherit those once their parents die), reaping every zombie.
function minifaas_reap($pid)
{
    $libc = minifaas_libc();
    pcntl_waitpid($pid, $status);
    $libc->kill(-$pid, 9);
    $deadline = microtime(true) + MINIFAAS_REAP_DEADLINE_S;
    while (microtime(true) < $deadline) {
        while (($reaped = pcntl_waitpid(-1, $ignored, WNOHANG)) > 0) {
        }
        if ($reaped < 0) {
            break;                  // no child at all, the usual case
        }
        foreach (minifaas_children() as $stray) {
            $libc->kill($stray, 9);
        }
        usleep(1000);
    }
    if (pcntl_wifexited($status)) {
        return pcntl_wexitstatus($status);
    }
    return pcntl_wifsignaled($status) ? -pcntl_wtermsig($status) : 1;
}

function minifaas_children()
{
    $me = getmypid();
    $found = [];
    foreach (glob("/proc/[0-9]*/stat") ?: [] as $path) {
        $stat = @file_get_contents($path);
        if ($stat === false) {
            continue;
        }
        $fields = explode(" ", substr($stat, strrpos($stat, ")") + 2));
        if ((int) $fields[1] === $me) {
            $found[] = (int) basename(dirname($path));
        }
    }
    return $found;
}

// Remove a file or a tree a call left (its processes are dead); a mode it set is undone first.
function minifaas_remove($path)
{
    if (is_dir($path) && !is_link($path)) {
        @chmod($path, 0700);
        foreach (@scandir($path) ?: [] as $name) {
            if ($name !== "." && $name !== "..") {
                minifaas_remove($path . "/" . $name);
            }
        }
        @rmdir($path);
    } else {
        @unlink($path);
    }
}

// In the forked child: into the call's cgroup first, then a process group of its own (what
// minifaas_reap kills), the call's stdio, directory, code and CPU limit. `$init`: the fork
// server is its pid namespace's init, whose death ends the call by itself (no PDEATHSIG asked,
// as warm_python.py does). A group, not a session, as in warm_python.py: the fork server leads
// a session with no terminal, and a setsid() per call cost a scheduler autogroup per call.
function minifaas_become_call($call, $fds, $source, $init)
{
    $libc = minifaas_libc();
    $std = array_slice($fds, 0, 3);
    foreach (array_slice($fds, 3, $call["join"] ?? 0) as $fd) {
        if ($libc->write($fd, "0", 1) !== 1) {
            $text = "the call could not enter its cgroup\n";
            $libc->write($std[2], $text, strlen($text));
            exit(125);
        }
        $libc->close($fd);
    }
    $libc->setpgid(0, 0);
    if (!$init) {
        $libc->prctl(MINIFAAS_PR_SET_PDEATHSIG, 9, 0, 0, 0);
    }
    foreach ($std as $target => $fd) {
        $libc->dup2($fd, $target);
    }
    $libc->close_range(3, 0xFFFFFFFF, 0);
    if (!@chdir($call["dir"])) {
        $text = "the call could not enter its directory\n";
        $libc->write(2, $text, strlen($text));
        exit(125);
    }
    $script = $call["dir"] . "/code.php";
    file_put_contents($script, $source);
    chmod($script, 0600);
    $limit = $libc->new("struct rlimit");
    $limit->rlim_cur = $limit->rlim_max = (int) $call["cpu"];
    $libc->setrlimit(0, FFI::addr($limit));     // RLIMIT_CPU
    // What `php code.php` would show the script.
    $GLOBALS["argv"] = $_SERVER["argv"] = [$script];
    $GLOBALS["argc"] = $_SERVER["argc"] = 1;
    foreach (["SCRIPT_FILENAME", "SCRIPT_NAME", "PHP_SELF", "PATH_TRANSLATED"] as $key) {
        $_SERVER[$key] = $script;
    }
}

minifaas_serve();
// Only a forked child gets here, in its call's directory.
include "./code.php";
