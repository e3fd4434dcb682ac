/* gg-infer model shim: what runs in place of gcc, ar, ld, ... during gg-infer.
 *
 * Why C: a model runs once per compiler call, and a Python start costs ~40 ms; this
 * shim costs well under a millisecond. It is reached two ways:
 *  - the exec interposition library (preload.c) execs it in place of a toolchain tool
 *    the build named by any path, with argv unchanged and GG_INFER_EXEC=KIND:PROGRAM
 *    naming the program the build asked for (KIND "tool", or "input": another program
 *    that got a placeholder file as an argument);
 *  - by name, as a symlink in the shim directory on PATH (static build drivers), or
 *    by path (CC=.gg/infer/bin/cc); then the program is found by name on PATH.
 * It sends cwd, the program, argv and environment to the long-lived model server of
 * gg-infer over a unix socket ($GG_INFER_SOCKET) and then either prints what the
 * server answers and exits with its status ('R' reply), or execs the real program
 * ('X' reply, or no server at all).
 *
 * A real *tool* runs without our preload library in LD_PRELOAD (other entries stay)
 * and without the shim directory on PATH, so a real gcc's cc1/as/collect2/ld are never
 * intercepted; its argv[0] is what the build passed, except that a path to the shim
 * itself becomes the real tool's path (gcc finds cc1 relative to argv[0]). An "input"
 * program keeps its environment (its own children are still intercepted). The exec is
 * a raw system call, so this process's own preload hooks do not catch it again.
 *
 * Request:  "GGI2\0" cwd "\0" program "\0" argc "\0" argv[0] "\0" ... envc "\0" env[0] "\0" ...
 *           (program: PROGRAM from GG_INFER_EXEC, or "" when reached by name/path)
 * Reply:    'X'                                   -> exec the real program
 *           'R' status "\n" <bytes for stderr>   -> write them, exit(status)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

extern char **environ;

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* `list` without the entries equal to `drop`; entries split at any of `seps`,
 * joined with seps[0]. Returns a malloc'ed string. */
static char *without_entry(const char *list, const char *drop, const char *seps) {
    char *out = malloc(strlen(list) + 1);
    size_t len = 0, dl = strlen(drop);
    if (!out) return NULL;
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, seps);
        if (n > 0 && !(n == dl && strncmp(p, drop, dl) == 0)) {
            if (len) out[len++] = seps[0];
            memcpy(out + len, p, n);
            len += n;
        }
        p += n;
        if (*p) p++;
    }
    out[len] = 0;
    return out;
}

/* The environment a real toolchain tool gets: as without gg-infer. */
static void tool_environment(void) {
    const char *lib = getenv("GG_INFER_PRELOAD"), *preload = getenv("LD_PRELOAD");
    if (lib && preload) {
        char *rest = without_entry(preload, lib, " :");
        if (rest && *rest) setenv("LD_PRELOAD", rest, 1);
        else unsetenv("LD_PRELOAD");
        free(rest);
    }
    const char *dir = getenv("GG_INFER_SHIM_DIR"), *path = getenv("PATH");
    if (dir && path) {
        char *rest = without_entry(path, dir, ":");
        if (rest) setenv("PATH", rest, 1);
        free(rest);
    } else if (getenv("GG_INFER_REAL_PATH")) {
        setenv("PATH", getenv("GG_INFER_REAL_PATH"), 1);
    }
}

static int is_self(const char *path) {
    struct stat a, b;
    return stat(path, &a) == 0 && stat("/proc/self/exe", &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static void exec_or_die(const char *path, char **argv) {
    syscall(SYS_execve, path, argv, environ);
    int err = errno;
    fprintf(stderr, "gg-infer shim: %s: %s\n", path, strerror(err));
    exit(err == ENOENT ? 127 : 126);
}

static void exec_real(const char *kind, const char *program, char **argv) {
    if (program && *program) {
        if (strcmp(kind, "input") != 0) tool_environment();
        exec_or_die(program, argv);
    }
    if (!argv[0]) {
        fprintf(stderr, "gg-infer shim: called without argv[0]\n");
        exit(127);
    }
    const char *name = base_name(argv[0]);
    tool_environment();
    const char *path = getenv("PATH");
    char candidate[PATH_MAX];
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *p = path; *p;) {
        size_t len = strcspn(p, ":");
        if (len > 0 && len + 1 + strlen(name) + 1 < sizeof candidate) {
            memcpy(candidate, p, len);
            candidate[len] = '/';
            strcpy(candidate + len + 1, name);
            if (access(candidate, X_OK) == 0 && !is_self(candidate)) {
                if (strchr(argv[0], '/')) argv[0] = candidate;  /* the shim's path: gcc needs its own */
                exec_or_die(candidate, argv);
            }
        }
        p += len;
        if (*p) p++;
    }
    fprintf(stderr, "gg-infer shim: %s: not found on the real PATH\n", name);
    exit(127);
}

typedef struct { char *data; size_t len, cap; } buffer;

static void put(buffer *b, const char *s, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 4096;
        b->data = realloc(b->data, b->cap);
        if (!b->data) { perror("gg-infer shim"); exit(125); }
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void put_str(buffer *b, const char *s) { put(b, s, strlen(s) + 1); }

static void put_num(buffer *b, long n) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%ld", n);
    put_str(b, tmp);
}

/* Connect to the server and send the request: the connected socket; -2 if nothing
 * listens (no server), -1 if the request could not be sent. */
static int ask(const char *sock_path, const buffer *req) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, sock_path);
    if (fd < 0) return -2;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) { close(fd); return -2; }
    for (size_t off = 0; off < req->len;) {
        ssize_t n = write(fd, req->data + off, req->len - off);
        if (n < 0) { if (errno == EINTR) continue; close(fd); return -1; }
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    return fd;
}

int main(int argc, char **argv) {
    /* GG_INFER_EXEC=KIND:PROGRAM from the preload library; gone before anything runs */
    static char spec[PATH_MAX + 16];
    const char *kind = "tool", *program = NULL;
    const char *exec_env = getenv("GG_INFER_EXEC");
    if (exec_env && strlen(exec_env) < sizeof spec) {
        strcpy(spec, exec_env);
        char *colon = strchr(spec, ':');
        if (colon) {
            *colon = 0;
            kind = spec;
            program = colon + 1;
        }
    }
    unsetenv("GG_INFER_EXEC");
    if (argc < 1) exec_real(kind, program, argv);
    const char *sock_path = getenv("GG_INFER_SOCKET");
    if (!sock_path || strlen(sock_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        exec_real(kind, program, argv);
    buffer req = {0};
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) exec_real(kind, program, argv);
    put_str(&req, "GGI2");
    put_str(&req, cwd);
    put_str(&req, program ? program : "");
    put_num(&req, argc);
    for (int i = 0; i < argc; i++) put_str(&req, argv[i]);
    long envc = 0;
    for (char **e = environ; *e; e++) envc++;
    put_num(&req, envc);
    for (char **e = environ; *e; e++) put_str(&req, *e);

    /* A server that accepted the request and closed without a reply had its worker end
     * (gg-infer's warm model server, model_sub/warm_server.py); gg-infer then serves the
     * socket itself, so the request is sent once more before the real tool runs. */
    char reply;
    int fd = -1;
    for (int attempt = 0; attempt < 2; attempt++) {
        fd = ask(sock_path, &req);
        if (fd == -2) exec_real(kind, program, argv); /* no server at all */
        if (fd < 0) continue;
        ssize_t n;
        do { n = read(fd, &reply, 1); } while (n < 0 && errno == EINTR);
        if (n == 1) break;
        close(fd);
        fd = -1;
    }
    if (fd < 0 || reply == 'X') { if (fd >= 0) close(fd); exec_real(kind, program, argv); }
    ssize_t n;
    char line[32];
    size_t pos = 0;
    while (pos + 1 < sizeof line) {
        n = read(fd, line + pos, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n != 1 || line[pos] == '\n') break;
        pos++;
    }
    line[pos] = 0;
    int status = atoi(line);
    char chunk[8192];
    for (;;) {
        n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (write(2, chunk, (size_t)n) < 0) break;
    }
    return status;
}
