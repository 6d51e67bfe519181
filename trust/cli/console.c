/* The `trust` executable: hands `trust run` and `trust create` to a running `trust agent`, and
 * runs everything else (or those, when no agent takes them) in Python, `trust-python` beside it.
 *
 * Why C: a warm `trust run` through the agent takes ~45 ms more than runc alone, and a third of
 * that was the client's Python interpreter starting (~13 ms before the first import) only to
 * send one request. This program is the client half of the protocol that trust/cli/agent.py
 * describes, the same one trust/cli/console.py speaks (it is what `trust-python` runs, and what
 * a `trust` without a C compiler at install time is); tests/test_agent.py runs both against the
 * same real and fake agents.
 *
 * The rules it keeps, as the Python client does:
 * - a command never runs twice: it falls back to running in-process only when the agent surely
 *   did not run it (no agent, a peer that is neither us nor root, a refusal, the request reset
 *   unread); an agent that ends after reading the request is an error (exit 1);
 * - nothing is sent to a peer that is neither our user nor root (SO_PEERCRED);
 * - the delegated signals are held from before the request is sent, relayed once the agent has
 *   accepted it, and on a fallback do what they would have done to an in-process command;
 * - argv, the environment and the working directory are sent as the bytes they are: what is not
 *   UTF-8 goes as the lone surrogates of Python's `surrogateescape`, which the agent turns back
 *   into the same bytes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef TRUST_VERSION
#error "build with -DTRUST_VERSION='\"x.y.z\"' (trust/__init__.py's __version__)"
#endif

#define DEFAULT_SOCKET "/run/trust/agent.sock"
#define MAX_MESSAGE_BYTES (1024 * 1024)
#define PYTHON_CLIENT "trust-python"

extern char **environ;

/* run/signals.py DELEGATED_SIGNALS: the forwarded signals, and SIGWINCH for a terminal's size. */
static const int delegated_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
#define N_DELEGATED (sizeof delegated_signals / sizeof delegated_signals[0])

static char **arguments;
static sigset_t held, original_mask;
static int signal_fd = -1;
static int pending[64];
static size_t n_pending;
static void (*original_sigpipe)(int) = SIG_DFL;

static _Noreturn void fail(const char *message) {
    fprintf(stderr, "trust: error: %s\n", message);
    _exit(1);
}

/* Run the command in Python: `trust-python` from the folder this executable is in. */
static _Noreturn void run_in_process(int agent_refused) {
    char self[PATH_MAX + sizeof PYTHON_CLIENT];
    ssize_t length = readlink("/proc/self/exe", self, PATH_MAX);
    if (length < 0 || length == PATH_MAX)
        fail("cannot find the trust executable's folder (/proc/self/exe)");
    self[length] = '\0';
    char *slash = strrchr(self, '/');
    strcpy(slash + 1, PYTHON_CLIENT);
    if (agent_refused)
        setenv("TRUST_NO_AGENT", "1", 1); /* asked once: the Python client must not ask again */
    arguments[0] = self;
    execv(self, arguments);
    fprintf(stderr, "trust: error: cannot run %s: %s\n", self, strerror(errno));
    _exit(127);
}

/* -- a growing buffer, and JSON strings in it ------------------------------------------------ */

struct buffer {
    char *data;
    size_t length, capacity;
};

static void reserve(struct buffer *b, size_t more) {
    if (b->length + more <= b->capacity)
        return;
    size_t capacity = b->capacity ? b->capacity : 4096;
    while (capacity < b->length + more)
        capacity *= 2;
    b->data = realloc(b->data, capacity);
    if (!b->data)
        fail("out of memory");
    b->capacity = capacity;
}

static void append(struct buffer *b, const char *text, size_t length) {
    reserve(b, length);
    memcpy(b->data + b->length, text, length);
    b->length += length;
}

static void append_text(struct buffer *b, const char *text) { append(b, text, strlen(text)); }

/* `\uXXXX` for a UTF-16 code unit. */
static void append_unit(struct buffer *b, uint16_t unit) {
    static const char hex[] = "0123456789abcdef";
    char escaped[6] = {'\\', 'u', hex[unit >> 12], hex[unit >> 8 & 0xf], hex[unit >> 4 & 0xf], hex[unit & 0xf]};
    append(b, escaped, sizeof escaped);
}

/* The length of the UTF-8 sequence at `s` that Python's strict decoder accepts (no overlong
 * forms, no surrogates, nothing above U+10FFFF), with its code point; 0 if there is none. */
static size_t utf8_sequence(const unsigned char *s, size_t left, uint32_t *code_point) {
    unsigned char c = s[0];
    size_t length;
    uint32_t value, minimum;
    if (c >= 0xc2 && c <= 0xdf)
        length = 2, value = c & 0x1f, minimum = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        length = 3, value = c & 0x0f, minimum = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        length = 4, value = c & 0x07, minimum = 0x10000;
    else
        return 0;
    if (left < length)
        return 0;
    for (size_t i = 1; i < length; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        value = value << 6 | (s[i] & 0x3f);
    }
    if (value < minimum || value > 0x10ffff || (value >= 0xd800 && value <= 0xdfff))
        return 0;
    *code_point = value;
    return length;
}

/* `bytes` as a JSON string of ASCII characters (as Python's json.dumps(ensure_ascii=True) writes
 * the str that os.fsdecode makes of them). */
static void append_string(struct buffer *b, const char *bytes, size_t size) {
    const unsigned char *s = (const unsigned char *)bytes;
    append(b, "\"", 1);
    for (size_t i = 0; i < size;) {
        unsigned char c = s[i];
        uint32_t code_point;
        size_t length;
        if (c == '"' || c == '\\') {
            char escaped[2] = {'\\', (char)c};
            append(b, escaped, 2);
            i++;
        } else if (c >= 0x20 && c < 0x7f) {
            append(b, (const char *)&s[i], 1);
            i++;
        } else if (c < 0x80) {
            append_unit(b, c); /* control characters, DEL */
            i++;
        } else if ((length = utf8_sequence(s + i, size - i, &code_point)) > 0) {
            if (code_point >= 0x10000) { /* a surrogate pair */
                code_point -= 0x10000;
                append_unit(b, (uint16_t)(0xd800 + (code_point >> 10)));
                append_unit(b, (uint16_t)(0xdc00 + (code_point & 0x3ff)));
            } else {
                append_unit(b, (uint16_t)code_point);
            }
            i += length;
        } else {
            append_unit(b, (uint16_t)(0xdc00 + c)); /* surrogateescape: a byte that is not UTF-8 */
            i++;
        }
    }
    append(b, "\"", 1);
}

static void append_c_string(struct buffer *b, const char *text) { append_string(b, text, strlen(text)); }

static void build_request(struct buffer *b, int argc, char **argv, const char *cwd) {
    mode_t mask = umask(022);
    umask(mask);
    char number[32];
    append_text(b, "{\"version\":");
    append_c_string(b, TRUST_VERSION);
    append_text(b, ",\"argv\":[");
    for (int i = 1; i < argc; i++) {
        if (i > 1)
            append(b, ",", 1);
        append_c_string(b, argv[i]);
    }
    append_text(b, "],\"cwd\":");
    append_c_string(b, cwd);
    snprintf(number, sizeof number, ",\"umask\":%u", (unsigned)mask);
    append_text(b, number);
    append_text(b, ",\"env\":{");
    int first = 1;
    for (char **variable = environ; *variable; variable++) {
        const char *equals = strchr(*variable, '=');
        if (!equals || equals == *variable)
            continue; /* os.environ leaves out entries without a name */
        if (!first)
            append(b, ",", 1);
        first = 0;
        append_string(b, *variable, (size_t)(equals - *variable));
        append(b, ":", 1);
        append_c_string(b, equals + 1);
    }
    append_text(b, "}}\n");
}

/* -- the agent's answers: one JSON object per line --------------------------------------------- */

/* What a message from the agent holds: the keys the client acts on (as the Python client reads
 * them: whatever their values, but an exit code is an integer). */
enum {
    MALFORMED = 1,        /* not one JSON object on the line (or not UTF-8) */
    HAS_ACCEPTED = 2,     /* "accepted" */
    HAS_REFUSED = 4,      /* "refused" */
    HAS_EXIT = 8,         /* "exit": an exit status (an integer from 0 to 255), in *code */
    HAS_ODD_EXIT = 16,    /* "exit": anything else */
};

struct reader {
    const char *at, *end;
    int depth;
};

/* Whether `c` is one of `set` (strchr alone would also find a NUL byte: the set's terminator). */
static int one_of(char c, const char *set) { return c != '\0' && strchr(set, c) != NULL; }

static void skip_space(struct reader *r) {
    while (r->at < r->end && (*r->at == ' ' || *r->at == '\t' || *r->at == '\n' || *r->at == '\r'))
        r->at++;
}

/* A JSON string; its raw contents (escapes left as they are) in [*start, *stop). */
static int read_string(struct reader *r, const char **start, const char **stop) {
    if (r->at >= r->end || *r->at != '"')
        return 0;
    *start = ++r->at;
    while (r->at < r->end && *r->at != '"') {
        unsigned char c = (unsigned char)*r->at;
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            if (++r->at >= r->end)
                return 0;
            if (*r->at == 'u') {
                for (int i = 0; i < 4; i++)
                    if (++r->at >= r->end || !one_of(*r->at, "0123456789abcdefABCDEF"))
                        return 0;
            } else if (!one_of(*r->at, "\"\\/bfnrt")) {
                return 0;
            }
        }
        r->at++;
    }
    if (r->at >= r->end)
        return 0;
    *stop = r->at++;
    return 1;
}

/* One or more decimal digits; 0 if there is none. */
static int read_digits(struct reader *r) {
    const char *start = r->at;
    while (r->at < r->end && *r->at >= '0' && *r->at <= '9')
        r->at++;
    return r->at > start;
}

/* A JSON number that is an integer (optionally negative), as a long; 0 if it is not one. */
static int read_integer(struct reader *r, long *value) {
    const char *start = r->at;
    if (r->at < r->end && *r->at == '-')
        r->at++;
    if (r->at < r->end && *r->at == '0' && r->at + 1 < r->end && r->at[1] >= '0' && r->at[1] <= '9')
        return 0; /* a leading zero */
    if (!read_digits(r) || r->at - start > 18)
        return 0;
    char digits[24];
    memcpy(digits, start, (size_t)(r->at - start));
    digits[r->at - start] = '\0';
    *value = strtol(digits, NULL, 10);
    return 1;
}

/* What a caller learns of an object's members: `read_members` calls it with each key (its raw
 * contents in [start, stop)) and the reader at the value, which it must read. */
typedef int (*member_reader)(struct reader *r, const char *start, const char *stop, void *context);

static int read_value(struct reader *r);

static int read_any_member(struct reader *r, const char *start, const char *stop, void *context) {
    (void)start, (void)stop, (void)context;
    return read_value(r);
}

/* The members of the object or array at `r` (`on_member` reads an object's values; an array's
 * are read as any value). */
static int read_members(struct reader *r, char close, member_reader on_member, void *context) {
    if (++r->depth > 64)
        return 0;
    r->at++; /* the opening bracket */
    skip_space(r);
    if (r->at < r->end && *r->at == close) {
        r->at++;
        r->depth--;
        return 1;
    }
    for (;;) {
        skip_space(r);
        if (close == '}') {
            const char *start, *stop;
            if (!read_string(r, &start, &stop))
                return 0;
            skip_space(r);
            if (r->at >= r->end || *r->at++ != ':')
                return 0;
            skip_space(r);
            if (!on_member(r, start, stop, context))
                return 0;
        } else if (!read_value(r)) {
            return 0;
        }
        skip_space(r);
        if (r->at < r->end && *r->at == ',') {
            r->at++;
            continue;
        }
        if (r->at < r->end && *r->at == close) {
            r->at++;
            r->depth--;
            return 1;
        }
        return 0;
    }
}

/* Any JSON value (validated, not kept). */
static int read_value(struct reader *r) {
    skip_space(r);
    if (r->at >= r->end)
        return 0;
    const char *start, *stop;
    switch (*r->at) {
    case '{':
        return read_members(r, '}', read_any_member, NULL);
    case '[':
        return read_members(r, ']', read_any_member, NULL);
    case '"':
        return read_string(r, &start, &stop);
    }
    static const char *const words[] = {"true", "false", "null"};
    for (size_t i = 0; i < 3; i++) {
        size_t length = strlen(words[i]);
        if ((size_t)(r->end - r->at) >= length && memcmp(r->at, words[i], length) == 0) {
            r->at += length;
            return 1;
        }
    }
    long integer;
    if (!read_integer(r, &integer))
        return 0;
    if (r->at < r->end && *r->at == '.') { /* a fraction: valid JSON, never an exit code */
        r->at++;
        if (!read_digits(r))
            return 0;
    }
    if (r->at < r->end && (*r->at == 'e' || *r->at == 'E')) {
        r->at++;
        if (r->at < r->end && (*r->at == '+' || *r->at == '-'))
            r->at++;
        if (!read_digits(r))
            return 0;
    }
    return 1;
}

static int key_is(const char *start, const char *stop, const char *name) {
    return (size_t)(stop - start) == strlen(name) && memcmp(start, name, strlen(name)) == 0;
}

static int valid_utf8(const char *line, size_t length) {
    const unsigned char *s = (const unsigned char *)line;
    uint32_t code_point;
    for (size_t i = 0, step; i < length; i += step)
        if (!(step = s[i] < 0x80 ? 1 : utf8_sequence(s + i, length - i, &code_point)))
            return 0;
    return 1;
}

struct answer {
    int holds; /* the HAS_ flags */
    long code; /* with HAS_EXIT */
};

/* One member of an answer: the keys the client acts on are noted, every value is read. */
static int read_answer_member(struct reader *r, const char *start, const char *stop, void *context) {
    struct answer *answer = context;
    const char *value = r->at;
    long code;
    if (key_is(start, stop, "exit") && read_integer(r, &code) && code >= 0 && code <= 255 &&
        (r->at == r->end || one_of(*r->at, " \t\r\n,}"))) {
        answer->holds = (answer->holds & ~HAS_ODD_EXIT) | HAS_EXIT; /* the last "exit" counts, as in Python */
        answer->code = code;
        return 1;
    }
    r->at = value;
    if (!read_value(r))
        return 0;
    if (key_is(start, stop, "exit"))
        answer->holds = (answer->holds & ~HAS_EXIT) | HAS_ODD_EXIT;
    answer->holds |= key_is(start, stop, "accepted") ? HAS_ACCEPTED : 0;
    answer->holds |= key_is(start, stop, "refused") ? HAS_REFUSED : 0;
    return 1;
}

/* The keys of the JSON object that is the whole line (the HAS_ flags), or MALFORMED. Strict as
 * the Python client's reader: no space before the object, only spaces, tabs and CRs after it. */
static int parse_answer(const char *line, size_t length, long *code) {
    struct reader r = {line, line + length, 0};
    struct answer answer = {0, 0};
    if (!valid_utf8(line, length) || r.at >= r.end || *r.at != '{' ||
        !read_members(&r, '}', read_answer_member, &answer))
        return MALFORMED;
    while (r.at < r.end && (*r.at == ' ' || *r.at == '\t' || *r.at == '\r'))
        r.at++;
    if (r.at != r.end)
        return MALFORMED;
    if (answer.holds & HAS_EXIT)
        *code = answer.code;
    return answer.holds;
}

struct lines {
    int fd;
    struct buffer buffer;
    size_t start;
};

/* The next whole line already read, in *line (without its newline): 1, or 0 if there is none. */
static int take_line(struct lines *in, const char **line, size_t *length) {
    char *data = in->buffer.data + in->start;
    size_t available = in->buffer.length - in->start;
    char *newline = available ? memchr(data, '\n', available) : NULL;
    if (!newline)
        return 0;
    *line = data;
    *length = (size_t)(newline - data);
    in->start += *length + 1;
    return 1;
}

/* One read from the agent: the bytes it got, 0 at end of stream, -1 with errno set on an error
 * (EMSGSIZE for a line longer than MAX_MESSAGE_BYTES). */
static ssize_t read_more(struct lines *in) {
    size_t available = in->buffer.length - in->start;
    if (available > MAX_MESSAGE_BYTES) {
        errno = EMSGSIZE;
        return -1;
    }
    memmove(in->buffer.data, in->buffer.data + in->start, available); /* keep the unfinished line */
    in->buffer.length = available;
    in->start = 0;
    reserve(&in->buffer, 65536);
    ssize_t got;
    do
        got = recv(in->fd, in->buffer.data + in->buffer.length, 65536, 0);
    while (got < 0 && errno == EINTR);
    if (got > 0)
        in->buffer.length += (size_t)got;
    return got;
}

/* -- signals ------------------------------------------------------------------------------------ */

static void send_signal(int fd, int signum) {
    char message[32];
    int length = snprintf(message, sizeof message, "{\"signal\":%d}\n", signum);
    (void)!send(fd, message, (size_t)length, MSG_NOSIGNAL); /* an agent gone: the next read says so */
}

/* Move the signals that arrived into `pending` (in order; a full list drops the newest). */
static void collect_signals(void) {
    struct signalfd_siginfo info;
    while (read(signal_fd, &info, sizeof info) == (ssize_t)sizeof info)
        if (n_pending < sizeof pending / sizeof pending[0])
            pending[n_pending++] = (int)info.ssi_signo;
}

/* The agent did not run the command: run it here, unless a signal came meanwhile; then do what
 * that signal would have done to the command had it run in-process from the start. */
static _Noreturn void fall_back(void) {
    collect_signals();
    close(signal_fd);
    for (size_t i = 0; i < n_pending; i++) {
        struct sigaction current;
        sigaction(pending[i], NULL, &current);
        if (current.sa_handler == SIG_IGN)
            continue; /* ignored when we started (then the kernel drops it anyway) */
        if (pending[i] == SIGINT) {
            fprintf(stderr, "trust: interrupted\n"); /* as trust.cli.app reports a ^C */
            _exit(130);
        }
        if (pending[i] != SIGWINCH) { /* SIGWINCH's default action is to be ignored */
            sigprocmask(SIG_SETMASK, &original_mask, NULL);
            raise(pending[i]);
        }
    }
    sigprocmask(SIG_SETMASK, &original_mask, NULL);
    signal(SIGPIPE, original_sigpipe);
    run_in_process(1);
}

/* -- the command handed over ------------------------------------------------------------------- */

static _Noreturn void hand_over(int client, int argc, char **argv, const char *cwd) {
    struct buffer request = {0};
    build_request(&request, argc, argv, cwd);
    original_sigpipe = signal(SIGPIPE, SIG_IGN); /* as in Python: a closed stderr is an error, not death */

    /* Held from before the request leaves, read through a descriptor (never a handler). */
    signal_fd = signalfd(-1, &held, SFD_CLOEXEC | SFD_NONBLOCK);
    if (signal_fd < 0)
        fail("signalfd failed");

    int stdio[3] = {0, 1, 2};
    char control[CMSG_SPACE(sizeof stdio)];
    memset(control, 0, sizeof control);
    struct iovec part = {request.data, request.length};
    struct msghdr message = {.msg_iov = &part, .msg_iovlen = 1, .msg_control = control,
                             .msg_controllen = sizeof control};
    struct cmsghdr *rights = CMSG_FIRSTHDR(&message);
    rights->cmsg_level = SOL_SOCKET;
    rights->cmsg_type = SCM_RIGHTS;
    rights->cmsg_len = CMSG_LEN(sizeof stdio);
    memcpy(CMSG_DATA(rights), stdio, sizeof stdio);
    ssize_t sent = sendmsg(client, &message, MSG_NOSIGNAL);
    if (sent < 0)
        fall_back(); /* the agent went away before it had the request (or a closed stdio): nothing ran */
    for (size_t done = (size_t)sent; done < request.length; done += (size_t)sent) {
        sent = send(client, request.data + done, request.length - done, MSG_NOSIGNAL);
        if (sent < 0)
            fall_back();
    }

    struct lines replies = {.fd = client};
    const char *line;
    size_t length;
    long code = 0;
    ssize_t got = 1;
    while (!take_line(&replies, &line, &length) && (got = read_more(&replies)) > 0)
        continue;
    if (got < 0 && errno == ECONNRESET)
        fall_back(); /* the agent closed its socket with ours still queued: it read nothing */
    if (got == 0)
        fail("the agent ended before answering; the command may have started");
    int answer = got < 0 ? MALFORMED : parse_answer(line, length, &code);
    if (answer & HAS_REFUSED)
        fall_back();
    if (!(answer & HAS_ACCEPTED))
        fail("the agent's answer makes no sense; the command may have started");

    for (;;) {
        collect_signals(); /* those held until now, then each as it comes */
        for (size_t i = 0; i < n_pending; i++)
            send_signal(client, pending[i]);
        n_pending = 0;
        while (take_line(&replies, &line, &length)) { /* the answer's read may have brought more */
            int reply = parse_answer(line, length, &code);
            if (reply & HAS_EXIT)
                _exit((int)code);
            if (reply & (MALFORMED | HAS_ODD_EXIT))
                fail("the agent ended before the command finished");
        }
        struct pollfd watched[2] = {{client, POLLIN, 0}, {signal_fd, POLLIN, 0}};
        if (poll(watched, 2, -1) < 0 && errno != EINTR)
            fail("poll failed");
        if (watched[0].revents && read_more(&replies) <= 0)
            fail("the agent ended before the command finished");
    }
}

/* Whether the peer runs as our user or as root. */
static int ours(int client) {
    struct ucred peer;
    socklen_t size = sizeof peer;
    if (getsockopt(client, SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0)
        return 0;
    return peer.uid == geteuid() || peer.uid == 0;
}

int main(int argc, char **argv) {
    arguments = argv;
    /* A stdin, stdout or stderr closed at start: /dev/null in its place (the lowest free number),
     * so that neither our socket nor anything Python opens is handed over or used as that stream. */
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd)
            fail("cannot open /dev/null");
    const char *no_agent = getenv("TRUST_NO_AGENT");
    if (argc < 2 || (strcmp(argv[1], "run") != 0 && strcmp(argv[1], "create") != 0) ||
        (no_agent && *no_agent))
        run_in_process(0);
    const char *path = getenv("TRUST_AGENT_SOCKET");
    if (!path || !*path)
        path = DEFAULT_SOCKET;
    struct stat status;
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (stat(path, &status) != 0 || strlen(path) >= sizeof address.sun_path)
        run_in_process(0);
    strcpy(address.sun_path, path);
    char *cwd = getcwd(NULL, 0);
    if (!cwd)
        run_in_process(0); /* a working directory that was deleted: let the command itself say so */

    sigemptyset(&held);
    for (size_t i = 0; i < N_DELEGATED; i++)
        sigaddset(&held, delegated_signals[i]);
    sigprocmask(SIG_BLOCK, &held, &original_mask);

    int client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (client < 0 || connect(client, (struct sockaddr *)&address, sizeof address) != 0 || !ours(client)) {
        sigprocmask(SIG_SETMASK, &original_mask, NULL);
        run_in_process(0); /* no agent listens, or not ours to use: it gets nothing from us */
    }
    hand_over(client, argc, argv, cwd);
}
