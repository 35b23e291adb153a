/*
 * client.c - the classic class-lab TCP client.
 *
 * Usage: ./client HOST PORT
 *
 * Reads a line from stdin, sends it to the server (without the newline),
 * waits for ONE reply and prints it as "Server: <reply>".  Sending the
 * line "END" ends the session after its reply has been printed.
 *
 * KNOWN WEAKNESS (on purpose): this client only reads from the socket
 * right after it has written to it.  That is fine for an echo server,
 * where every message produces exactly one reply, but it is wrong for a
 * chat server: messages from other users arrive whenever they like, and
 * this client will not see them until you type something, and then it
 * will see at most one read()'s worth.  Also, TCP is a byte stream, not
 * a message stream, so one read() is not guaranteed to return a whole
 * reply.  See chat-client.c for the poll()-based way to do it properly.
 */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#define BUF_SIZE 4096

/*
 * Resolve HOST/PORT with getaddrinfo() and connect to the first address
 * that accepts.  Using getaddrinfo() instead of inet_addr()/gethostbyname()
 * means the same code works for IPv4, IPv6 and host names like
 * "localhost", which may resolve to several addresses of both families.
 * Returns the connected socket, or exits with a one-line error.
 */
static int connect_to(const char *host, const char *port)
{
    struct addrinfo hints, *res, *ai;
    int fd = -1;
    int err;
    int saved_errno = 0;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;     /* IPv4 or IPv6, whatever HOST gives */
    hints.ai_socktype = SOCK_STREAM; /* TCP */

    err = getaddrinfo(host, port, &hints, &res);
    if (err != 0) {
        fprintf(stderr, "client: %s:%s: %s\n", host, port, gai_strerror(err));
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
        /* close() may change errno; keep the reason connect() failed. */
        saved_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);

    if (fd < 0) {
        fprintf(stderr, "client: cannot connect to %s:%s: %s\n",
                host, port, strerror(saved_errno));
        exit(1);
    }
    return fd;
}

/*
 * write() may send fewer bytes than asked (a "short write"), and may be
 * interrupted by a signal, so keep going until everything is out.
 */
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

int main(int argc, char *argv[])
{
    char line[BUF_SIZE];
    char reply[BUF_SIZE];
    int fd;

    if (argc != 3) {
        fprintf(stderr, "usage: %s HOST PORT\n", argv[0]);
        return 1;
    }

    fd = connect_to(argv[1], argv[2]);

    while (fgets(line, sizeof line, stdin) != NULL) {
        size_t len = strlen(line);
        ssize_t n;
        int is_end;

        /* The lab protocol sends bare text, so drop the newline. */
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';

        is_end = (strcmp(line, "END") == 0);

        if (write_all(fd, line, len) < 0) {
            perror("client: write");
            return 1;
        }

        /* Exactly one read: this is the lab client's weakness (see top). */
        do {
            n = read(fd, reply, sizeof reply);
        } while (n < 0 && errno == EINTR);

        if (n < 0) {
            perror("client: read");
            return 1;
        }
        if (n == 0) {
            printf("Server closed the connection.\n");
            fflush(stdout);
            close(fd);
            return 0;
        }

        /*
         * The reply is raw bytes, not a C string (it has no '\0' and may
         * even contain one), so print it with fwrite and an explicit length.
         */
        fputs("Server: ", stdout);
        fwrite(reply, 1, (size_t)n, stdout);
        if (reply[n - 1] != '\n')
            putchar('\n');
        /* Flush so the output appears now even when stdout is a pipe. */
        fflush(stdout);

        if (is_end)
            break;
    }

    if (ferror(stdin)) {
        perror("client: stdin");
        close(fd);
        return 1;
    }

    close(fd);
    return 0;
}
