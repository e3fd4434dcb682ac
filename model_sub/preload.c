/* gg-infer exec interposition: an LD_PRELOAD library that sends toolchain calls to the
 * model shim, whatever path the build names them by.
 *
 * Why: build systems name tools by absolute path (CMake writes /usr/bin/c++ and
 * /usr/bin/ar into its makefiles), which a PATH shim never sees. Like Bear, this
 * library wraps the exec family (execve execv execvp execvpe execl execlp execle
 * fexecve posix_spawn posix_spawnp) in every dynamically linked process of the build.
 * For each exec it decides, by the program's basename and its arguments:
 *
 *  - a toolchain tool (same rule as model_sub/toolnames.py: [TRIPLE-]gcc|cc|g++|ar|
 *    ld|...[-VERSION]): exec the shim ($GG_INFER_SHIM) instead, with argv unchanged and
 *    GG_INFER_EXEC=tool:PATH naming the program the build asked for;
 *  - another program with an argument that is a gg placeholder file (compared with
 *    the two placeholder headers of ir/placeholder.py, passed in at compile time):
 *    the same, with GG_INFER_EXEC=input:PATH, so the server sees the call; except
 *    for programs that treat such files as opaque (see skip_placeholder_check);
 *  - anything else: exec it as asked. If it is a static ELF (no PT_INTERP), this
 *    library cannot follow it: the server is told (a "GGN1" note) so gg-infer warns,
 *    and the static program gets the shim directory first on PATH, so the tools it
 *    runs *by name* still reach the PATH shims. A dynamic program gets PATH without
 *    the shim directory (this library already sees its execs, and a configure step
 *    must find the real tools: CMake records the compiler path it finds).
 *
 * It must be safe in a vfork child (Python's subprocess, posix_spawn users): no
 * malloc, no stdio, no locks; the real functions are looked up in a constructor;
 * every buffer is on the stack.
 *
 * Note request: "GGN1\0static\0" cwd "\0" path "\0"; the server answers one byte.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef GG_MAX_PLACEHOLDER
#error "build with -DGG_MAX_PLACEHOLDER=... -DGG_SHEBANG_PREFIX=... -DGG_LINKER_PREFIX=... (launcher.py)"
#endif

extern char **environ;

typedef int (*execve_fn)(const char *, char *const[], char *const[]);
typedef int (*fexecve_fn)(int, char *const[], char *const[]);
typedef int (*spawn_fn)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                        char *const[], char *const[]);

static execve_fn real_execve, real_execvpe;
static fexecve_fn real_fexecve;
static spawn_fn real_spawn, real_spawnp;

__attribute__((constructor)) static void gg_preload_init(void) {
    real_execve = (execve_fn)dlsym(RTLD_NEXT, "execve");
    real_execvpe = (execve_fn)dlsym(RTLD_NEXT, "execvpe");
    real_fexecve = (fexecve_fn)dlsym(RTLD_NEXT, "fexecve");
    real_spawn = (spawn_fn)dlsym(RTLD_NEXT, "posix_spawn");
    real_spawnp = (spawn_fn)dlsym(RTLD_NEXT, "posix_spawnp");
}

/* ---- small helpers (no malloc) ---------------------------------------------------- */

static const char *env_get(char *const envp[], const char *name) {
    size_t len = strlen(name);
    if (!envp) return NULL;
    for (char *const *e = envp; *e; e++)
        if (strncmp(*e, name, len) == 0 && (*e)[len] == '=') return *e + len + 1;
    return NULL;
}

static size_t env_count(char *const envp[]) {
    size_t n = 0;
    if (envp)
        while (envp[n]) n++;
    return n;
}

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static int eq(const char *a, const char *b) { return strcmp(a, b) == 0; }

/* Length of the tool name in `name` if it is a toolchain tool, else 0 (toolnames.py). */
static const char *const TOOLS[] = {"gcc-ranlib", "gcc-ar", "gcc-nm", "ld.bfd", "ld.gold", "objcopy", "ranlib",
                                    "strip", "gcc", "g++", "c++", "c89", "c99", "cpp", "cc", "as", "ld", "ar",
                                    "nm", NULL};

static int is_triple(const char *s, size_t len) {
    int dashes = 0;
    if (len == 0 || s[0] == '-' || s[len - 1] == '-') return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '-') {
            if (s[i + 1] == '-') return 0;
            dashes++;
        } else if (!isalnum((unsigned char)c) && c != '_' && c != '.') {
            return 0;
        }
    }
    return dashes > 0;
}

static int is_tool(const char *name) {
    size_t len = strlen(name);
    const char *dash = strrchr(name, '-');
    if (dash && isdigit((unsigned char)dash[1])) {
        const char *p = dash + 1;
        while (*p && (isdigit((unsigned char)*p) || *p == '.')) p++;
        if (!*p) len = (size_t)(dash - name);
    }
    for (const char *const *t = TOOLS; *t; t++) {
        size_t tl = strlen(*t);
        if (len == tl && strncmp(name, *t, tl) == 0) return 1;
        if (len > tl + 1 && name[len - tl - 1] == '-' && strncmp(name + len - tl, *t, tl) == 0 &&
            is_triple(name, len - tl - 1))
            return 1;
    }
    return 0;
}

/* Programs whose file arguments are opaque to them, so a placeholder among them is fine:
 * they copy, move, link, remove or change metadata of files (cp, mv, ln, rm, touch,
 * chmod, mkdir, ...: a copied placeholder is still a valid placeholder), or they are
 * build drivers and shells whose arguments are scripts and targets, not data (make,
 * cmake, ninja, sh, bash, env, ...; the programs they start are checked in turn), or gg
 * itself (gg-force* and gg-infer take placeholders as their very arguments). */
static const char *const OPAQUE[] = {"cp", "mv", "ln", "rm", "touch", "chmod", "chown", "chgrp", "mkdir", "rmdir",
                                     "make", "gmake", "cmake", "ninja", "sh", "bash", "dash", "ksh", "zsh",
                                     "env", "nice", "nohup", "timeout", "gg", "gg-force", "gg-force-and-run",
                                     "gg-infer", NULL};

static int skip_placeholder_check(const char *name, char *const argv[]) {
    for (const char *const *o = OPAQUE; *o; o++)
        if (eq(name, *o)) return 1;
    if (strncmp(name, "python", 6) == 0 && argv) {  /* python -m executor.force_cli / model_sub.infer */
        for (size_t i = 1; argv[i] && argv[i + 1]; i++)
            if (eq(argv[i], "-m") && (strncmp(argv[i + 1], "executor.", 9) == 0 ||
                                      strncmp(argv[i + 1], "model_sub.", 10) == 0))
                return 1;
    }
    return 0;
}

static int is_placeholder(const char *path) {
    static const char shebang[] = GG_SHEBANG_PREFIX, linker[] = GG_LINKER_PREFIX;
    struct stat st;
    char head[64];
    if (!*path || stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    if (st.st_size > GG_MAX_PLACEHOLDER || st.st_size < (off_t)(sizeof shebang - 1)) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, head, sizeof head);
    close(fd);
    if (n >= (ssize_t)(sizeof shebang - 1) && memcmp(head, shebang, sizeof shebang - 1) == 0) return 1;
    if (n >= (ssize_t)(sizeof linker - 1) && memcmp(head, linker, sizeof linker - 1) == 0) return 1;
    return 0;
}

static int has_placeholder_arg(char *const argv[]) {
    if (!argv || !argv[0]) return 0;
    for (size_t i = 1; argv[i]; i++) {
        const char *word = argv[i];
        if (word[0] == '-') {  /* --file=x.o */
            const char *value = strchr(word, '=');
            if (value && is_placeholder(value + 1)) return 1;
        } else if (is_placeholder(word)) {
            return 1;
        }
    }
    return 0;
}

/* 1 if `path` is an ELF executable without a program interpreter (statically linked). */
static int is_static_elf(const char *path) {
    Elf64_Ehdr eh;
    Elf64_Phdr ph[64];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    int result = 0;
    if (read(fd, &eh, sizeof eh) == (ssize_t)sizeof eh && memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 &&
        eh.e_ident[EI_CLASS] == ELFCLASS64 && (eh.e_type == ET_EXEC || eh.e_type == ET_DYN) &&
        eh.e_phentsize == sizeof(Elf64_Phdr) && eh.e_phnum > 0 && eh.e_phnum <= 64) {
        size_t size = eh.e_phnum * sizeof(Elf64_Phdr);
        if (pread(fd, ph, size, (off_t)eh.e_phoff) == (ssize_t)size) {
            result = 1;
            for (int i = 0; i < eh.e_phnum; i++)
                if (ph[i].p_type == PT_INTERP) result = 0;
        }
    }
    close(fd);
    return result;
}

static void put(char *buf, size_t cap, size_t *len, const char *s) {
    size_t n = strlen(s) + 1;
    if (*len + n <= cap) memcpy(buf + *len, s, n);
    *len += n;
}

/* Tell the server a static program runs (it cannot see that program's execs). */
static void note_static(const char *sock_path, const char *path) {
    char msg[2 * PATH_MAX + 32], cwd[PATH_MAX];
    size_t len = 0;
    struct sockaddr_un addr;
    if (strlen(sock_path) >= sizeof addr.sun_path || !getcwd(cwd, sizeof cwd)) return;
    put(msg, sizeof msg, &len, "GGN1");
    put(msg, sizeof msg, &len, "static");
    put(msg, sizeof msg, &len, cwd);
    put(msg, sizeof msg, &len, path);
    if (len > sizeof msg) return;
    int saved = errno;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, sock_path);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
        size_t off = 0;
        while (off < len) {
            ssize_t n = write(fd, msg + off, len - off);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            off += (size_t)n;
        }
        shutdown(fd, SHUT_WR);
        char ack;
        while (read(fd, &ack, 1) < 0 && errno == EINTR) {
        }
    }
    close(fd);
    errno = saved;
}

/* Whether PATH (colon list) has `dir` as an entry. */
static int path_has(const char *path, const char *dir) {
    size_t dl = strlen(dir);
    for (const char *p = path; p && *p;) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == dl && strncmp(p, dir, dl) == 0) return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

/* "PATH=" + `path` with `dir` added first (add) or every `dir` entry removed. */
static void rewrite_path(char *out, size_t cap, const char *path, const char *dir, int add) {
    size_t len = 0, dl = strlen(dir);
    memcpy(out, "PATH=", 5);
    len = 5;
    if (add) {
        memcpy(out + len, dir, dl);
        len += dl;
        if (*path) out[len++] = ':';
    }
    for (const char *p = path; p && *p;) {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (!(n == dl && strncmp(p, dir, dl) == 0) && len + n + 2 < cap) {
            if (len > 5 && out[len - 1] != ':') out[len++] = ':';
            memcpy(out + len, p, n);
            len += n;
        }
        p = end ? end + 1 : NULL;
    }
    out[len] = 0;
}

/* Copy envp into `out` (room for count + 2), replacing PATH by `path_entry` (if not
 * NULL) and GG_INFER_EXEC by `exec_entry` (if not NULL; else it is dropped). */
static char *const *copy_env(char *const envp[], char **out, char *path_entry, char *exec_entry) {
    size_t n = 0;
    int path_done = 0;
    if (envp) {
        for (char *const *e = envp; *e; e++) {
            if (strncmp(*e, "GG_INFER_EXEC=", 14) == 0) continue;
            if (path_entry && strncmp(*e, "PATH=", 5) == 0) {
                if (!path_done) out[n++] = path_entry;
                path_done = 1;
                continue;
            }
            out[n++] = *e;
        }
    }
    if (path_entry && !path_done) out[n++] = path_entry;
    if (exec_entry) out[n++] = exec_entry;
    out[n] = NULL;
    return out;
}

/* ---- the decision ------------------------------------------------------------------ */

typedef struct {
    const char *path;   /* what to exec */
    char *const *envp;  /* with which environment */
    int routed;         /* 1 if path is the shim */
} plan_t;

/* Decide how to run `path`; `room` has env_count(envp) + 3 slots, `exec_buf` and
 * `path_buf` are scratch space for the two environment entries that may change. */
static plan_t decide(const char *path, char *const argv[], char *const envp[], char **room, char *exec_buf,
                     size_t exec_cap, char *path_buf, size_t path_cap) {
    plan_t plan = {path, envp, 0};
    const char *sock = env_get(envp, "GG_INFER_SOCKET");
    const char *shim = env_get(envp, "GG_INFER_SHIM");
    const char *shim_dir = env_get(envp, "GG_INFER_SHIM_DIR");
    struct stat st, shim_st;
    if (!sock || !shim || !shim_dir || !path || stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return plan;
    /* a process outliving gg-infer (a daemon) with a deleted .gg: run everything as asked */
    if (stat(shim, &shim_st) != 0) return plan;
    if (st.st_dev == shim_st.st_dev && st.st_ino == shim_st.st_ino) return plan;  /* a PATH shim, by name */
    const char *name = base_name(path);
    const char *kind = NULL;
    if (is_tool(name))
        kind = "tool";
    else if (!skip_placeholder_check(name, argv) && has_placeholder_arg(argv))
        kind = "input";
    if (kind) {
        size_t need = strlen("GG_INFER_EXEC=") + strlen(kind) + 1 + strlen(path) + 1;
        if (need > exec_cap) return plan;
        strcpy(exec_buf, "GG_INFER_EXEC=");
        strcat(exec_buf, kind);
        strcat(exec_buf, ":");
        strcat(exec_buf, path);
        plan.path = shim;
        plan.envp = copy_env(envp, room, NULL, exec_buf);
        plan.routed = 1;
        return plan;
    }
    const char *cur_path = env_get(envp, "PATH");
    int is_static = is_static_elf(path);
    if (is_static) note_static(sock, path);
    int has_dir = path_has(cur_path, shim_dir);
    if (is_static != has_dir && strlen(cur_path ? cur_path : "") + strlen(shim_dir) + 8 <= path_cap) {
        rewrite_path(path_buf, path_cap, cur_path ? cur_path : "", shim_dir, is_static);
        plan.envp = copy_env(envp, room, path_buf, NULL);
    }
    return plan;
}

#define PLAN_SPACE(envp)                                                                   \
    char *room_[env_count(envp) + 3];                                                      \
    char exec_buf_[PATH_MAX + 32];                                                         \
    const char *path_now_ = env_get(envp, "PATH");                                         \
    const char *dir_now_ = env_get(envp, "GG_INFER_SHIM_DIR");                             \
    char path_buf_[(path_now_ ? strlen(path_now_) : 0) + (dir_now_ ? strlen(dir_now_) : 0) + 16]

#define DECIDE(path, argv, envp) \
    decide(path, argv, envp, room_, exec_buf_, sizeof exec_buf_, path_buf_, sizeof path_buf_)

/* The first executable regular file named `file` on the caller's PATH, as execvp finds it. */
static int search_path(const char *file, char *out, size_t cap) {
    const char *path = getenv("PATH");
    if (!path) path = "/bin:/usr/bin";
    size_t fl = strlen(file);
    for (const char *p = path;;) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *dir = len ? p : ".";
        size_t dl = len ? len : 1;
        if (dl + 1 + fl + 1 <= cap) {
            memcpy(out, dir, dl);
            out[dl] = '/';
            memcpy(out + dl + 1, file, fl + 1);
            struct stat st;
            if (stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0) return 1;
        }
        if (!end) return 0;
        p = end + 1;
    }
}

/* ---- the wrapped functions ------------------------------------------------------------ */

static int hooked_execve(const char *path, char *const argv[], char *const envp[]) {
    PLAN_SPACE(envp);
    plan_t plan = DECIDE(path, argv, envp);
    return real_execve(plan.path, argv, plan.envp);
}

static int hooked_execvpe(const char *file, char *const argv[], char *const envp[]) {
    char found[PATH_MAX];
    if (!file || !*file || strchr(file, '/')) return hooked_execve(file, argv, envp);
    if (!search_path(file, found, sizeof found)) return real_execvpe(file, argv, envp);
    PLAN_SPACE(envp);
    plan_t plan = DECIDE(found, argv, envp);
    if (plan.routed) return real_execve(plan.path, argv, plan.envp);
    return real_execvpe(file, argv, plan.envp);  /* keeps execvp's own rules (ENOEXEC -> sh) */
}

int execve(const char *path, char *const argv[], char *const envp[]) { return hooked_execve(path, argv, envp); }
int execv(const char *path, char *const argv[]) { return hooked_execve(path, argv, environ); }
int execvp(const char *file, char *const argv[]) { return hooked_execvpe(file, argv, environ); }
int execvpe(const char *file, char *const argv[], char *const envp[]) { return hooked_execvpe(file, argv, envp); }

/* (glibc declares the first argument nonnull, but execl(path, NULL) is seen in the wild) */
#define COLLECT_ARGS(first, ap, argv)                                  \
    size_t argc_ = 0;                                                  \
    const char *volatile first_ = first;                               \
    va_start(ap, first);                                               \
    if (first_)                                                        \
        for (argc_ = 1; va_arg(ap, char *); argc_++) {                 \
        }                                                              \
    va_end(ap);                                                        \
    char *argv[argc_ + 1];                                             \
    va_start(ap, first);                                               \
    argv[0] = (char *)first_;                                          \
    for (size_t i_ = 1; i_ <= argc_; i_++) argv[i_] = va_arg(ap, char *); \
    argv[argc_] = NULL

int execl(const char *path, const char *arg, ...) {
    va_list ap;
    COLLECT_ARGS(arg, ap, argv);
    va_end(ap);
    return hooked_execve(path, argv, environ);
}

int execlp(const char *file, const char *arg, ...) {
    va_list ap;
    COLLECT_ARGS(arg, ap, argv);
    va_end(ap);
    return hooked_execvpe(file, argv, environ);
}

int execle(const char *path, const char *arg, ...) {
    va_list ap;
    COLLECT_ARGS(arg, ap, argv);
    char *const *envp = va_arg(ap, char *const *);  /* right after the NULL that ends the list */
    va_end(ap);
    return hooked_execve(path, argv, envp);
}

int fexecve(int fd, char *const argv[], char *const envp[]) {
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0 || target[0] != '/') return real_fexecve(fd, argv, envp);
    target[n] = 0;
    PLAN_SPACE(envp);
    plan_t plan = DECIDE(target, argv, envp);
    if (plan.routed) return real_execve(plan.path, argv, plan.envp);
    return real_fexecve(fd, argv, plan.envp);
}

int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
                const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
    PLAN_SPACE(envp);
    plan_t plan = DECIDE(path, argv, envp);
    return real_spawn(pid, plan.path, actions, attr, argv, plan.envp);
}

int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *actions,
                 const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
    char found[PATH_MAX];
    if (!*file) return real_spawnp(pid, file, actions, attr, argv, envp);
    if (strchr(file, '/')) return posix_spawn(pid, file, actions, attr, argv, envp);
    if (!search_path(file, found, sizeof found)) return real_spawnp(pid, file, actions, attr, argv, envp);
    PLAN_SPACE(envp);
    plan_t plan = DECIDE(found, argv, envp);
    if (plan.routed) return real_spawn(pid, plan.path, actions, attr, argv, plan.envp);
    return real_spawnp(pid, file, actions, attr, argv, plan.envp);
}
