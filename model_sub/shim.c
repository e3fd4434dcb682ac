/* gg-infer model shim: the program a build finds first on PATH as gcc, ar, ld, ...
 *
 * Why C: a model runs once per compiler call, and a Python start costs ~40 ms; this
 * shim costs well under a millisecond. It sends its argv, cwd and environment to the
 * long-lived model server of gg-infer over a unix socket ($GG_INFER_SOCKET) and then
 * either prints what the server answers and exits with its status ('R' reply), or execs
 * the real tool found on the real PATH ($GG_INFER_REAL_PATH) with the same argv ('X'
 * reply, or no server at all). The real tool runs with the real PATH, so a real gcc
 * never finds the shims for as/ld.
 *
 * Request:  "GGI1\0" cwd "\0" argc "\0" argv[0] "\0" ... envc "\0" env[0] "\0" ...
 * Reply:    'X'                                   -> exec the real tool
 *           'R' status "\n" <bytes for stderr>   -> write them, exit(status)
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

extern char **environ;

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static void exec_real(char **argv) {
    const char *real_path = getenv("GG_INFER_REAL_PATH");
    const char *name = base_name(argv[0]);
    char candidate[PATH_MAX];
    if (!real_path) real_path = "/usr/local/bin:/usr/bin:/bin";
    setenv("PATH", real_path, 1);
    const char *p = real_path;
    while (*p) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0) { p = end ? end + 1 : p + len; continue; }
        if (len + 1 + strlen(name) + 1 < sizeof candidate) {
            memcpy(candidate, p, len);
            candidate[len] = '/';
            strcpy(candidate + len + 1, name);
            if (access(candidate, X_OK) == 0) {
                execv(candidate, argv);
            }
        }
        if (!end) break;
        p = end + 1;
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

int main(int argc, char **argv) {
    const char *sock_path = getenv("GG_INFER_SOCKET");
    if (!sock_path || strlen(sock_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) exec_real(argv);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, sock_path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) exec_real(argv);

    buffer req = {0};
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) exec_real(argv);
    put_str(&req, "GGI1");
    put_str(&req, cwd);
    put_num(&req, argc);
    for (int i = 0; i < argc; i++) put_str(&req, argv[i]);
    long envc = 0;
    for (char **e = environ; *e; e++) envc++;
    put_num(&req, envc);
    for (char **e = environ; *e; e++) put_str(&req, *e);
    for (size_t off = 0; off < req.len;) {
        ssize_t n = write(fd, req.data + off, req.len - off);
        if (n < 0) { if (errno == EINTR) continue; exec_real(argv); }
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);

    char kind;
    ssize_t n;
    do { n = read(fd, &kind, 1); } while (n < 0 && errno == EINTR);
    if (n != 1 || kind == 'X') { close(fd); exec_real(argv); }
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
