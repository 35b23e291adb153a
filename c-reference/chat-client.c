/*
 * chat-client.c - a small poll()-based chat client.
 *
 * Usage: ./chat-client HOST PORT
 *
 * Lines typed on stdin are sent to the server, each ending in "\n".
 * Everything the server sends is printed as soon as it arrives.
 *
 * Why poll()?  A chat client has two sources of input that are
 * completely independent: the user's keyboard and the server (which
 * relays what other users say).  A program that blocks in fgets() on
 * stdin cannot notice a message from the server, and a program that
 * blocks in read() on the socket cannot notice the user typing.  poll()
 * waits on both at once and says which one is ready, so the program
 * only ever reads from a descriptor that has data.  Compare client.c,
 * which can only do one thing at a time.
 *
 * When stdin reaches EOF (Ctrl-D, or the end of a piped file) the client
 * half-closes the connection with shutdown(SHUT_WR): the server sees EOF,
 * but the client keeps printing whatever the server still sends until
 * the server closes its side.
 */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#define BUF_SIZE 4096

/*
 * Resolve HOST/PORT with getaddrinfo() and connect to the first address
 * that accepts, so IPv4, IPv6 and host names all work.
 * Returns the connected socket, or exits with a one-line error.
 */
static int connect_to(const char *host, const char *port)
{
    struct addrinfo hints, *res, *ai;
    int fd = -1;
    int err;
    int saved_errno = 0;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;

    err = getaddrinfo(host, port, &hints, &res);
    if (err != 0) {
        fprintf(stderr, "chat-client: %s:%s: %s\n",
                host, port, gai_strerror(err));
        exit(1);
    }

    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) {
            saved_errno = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        saved_errno = errno;   /* close() may overwrite it */
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);

    if (fd < 0) {
        fprintf(stderr, "chat-client: cannot connect to %s:%s: %s\n",
                host, port, strerror(saved_errno));
        exit(1);
    }
    return fd;
}

/* write() may send fewer bytes than asked, so keep going until done. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * Copy server bytes to stdout, turning "\r\n" into "\n" so servers that
 * use network-style line endings don't leave stray '\r' characters on
 * the terminal.  A '\r' at the very end of one read() may be followed
 * by its '\n' in the next one, so it is held back in *pending_cr until
 * we know what comes after it.
 */
static int print_from_server(const char *buf, size_t len, int *pending_cr)
{
    char out[BUF_SIZE + 1];
    size_t o = 0;
    size_t i;

    for (i = 0; i < len; i++) {
        char c = buf[i];

        if (*pending_cr) {
            *pending_cr = 0;
            if (c != '\n')
                out[o++] = '\r';   /* a lone '\r': keep it */
        }
        if (c == '\r')
            *pending_cr = 1;
        else
            out[o++] = c;
    }
    /*
     * write() straight to fd 1 instead of printf(): no stdio buffer sits
     * between the server and the screen, so text appears immediately
     * even when stdout is a pipe.
     */
    return write_all(STDOUT_FILENO, out, o);
}

int main(int argc, char *argv[])
{
    struct pollfd fds[2];
    char buf[BUF_SIZE];
    int sock;
    int pending_cr = 0;
    char last_sent = '\n';   /* "nothing sent" counts as line-terminated */

    if (argc != 3) {
        fprintf(stderr, "usage: %s HOST PORT\n", argv[0]);
        return 1;
    }

    /*
     * If the server disappears while we are sending, get an EPIPE error
     * from write() instead of being killed silently by SIGPIPE.
     */
    signal(SIGPIPE, SIG_IGN);

    sock = connect_to(argv[1], argv[2]);

    /*
     * stdin is read with read() on fd 0, not with fgets().  stdio may
     * pull several lines into its own buffer at once; poll() only knows
     * about the kernel's buffer, so it would report "nothing to read"
     * while lines sit unprocessed inside stdio.
     */
    fds[0].fd = STDIN_FILENO;
    fds[0].events = POLLIN;
    fds[1].fd = sock;
    fds[1].events = POLLIN;

    for (;;) {
        ssize_t n;

        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("chat-client: poll");
            return 1;
        }

        /*
         * POLLHUP and POLLERR are reported even though we did not ask
         * for them.  Treat them as "readable": the read() below then
         * returns 0 (EOF) or -1 with the real error.
         */
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            n = read(sock, buf, sizeof buf);
            if (n < 0 && errno != EINTR) {
                perror("chat-client: read from server");
                return 1;
            }
            if (n == 0) {
                if (pending_cr)
                    write_all(STDOUT_FILENO, "\r", 1);
                fprintf(stderr, "Connection closed by server.\n");
                close(sock);
                return 0;
            }
            if (n > 0 && print_from_server(buf, (size_t)n, &pending_cr) < 0) {
                perror("chat-client: write to stdout");
                return 1;
            }
        }

        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            n = read(STDIN_FILENO, buf, sizeof buf);
            if (n < 0 && errno != EINTR) {
                perror("chat-client: read from stdin");
                return 1;
            }
            if (n > 0) {
                /*
                 * Send whatever arrived, whole lines or not; the server
                 * splits the byte stream into lines at each "\n" anyway.
                 */
                if (write_all(sock, buf, (size_t)n) < 0) {
                    perror("chat-client: write to server");
                    return 1;
                }
                last_sent = buf[n - 1];
            }
            if (n == 0) {
                /* Make sure the final line is terminated, like the rest. */
                if (last_sent != '\n' &&
                    write_all(sock, "\n", 1) < 0) {
                    perror("chat-client: write to server");
                    return 1;
                }
                /*
                 * Half-close: tell the server we are done sending, but
                 * keep the connection open to receive its last words.
                 * close() here would throw away anything still on its way.
                 */
                if (shutdown(sock, SHUT_WR) < 0) {
                    perror("chat-client: shutdown");
                    return 1;
                }
                /* poll() ignores entries with a negative fd. */
                fds[0].fd = -1;
            }
        }
    }
}
