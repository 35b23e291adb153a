/*
 * echo-server.c - the classic class-lab fork-per-connection echo server.
 *
 * Usage: ./echo-server PORT      (PORT 0 = let the kernel pick a free port)
 *
 * Every accepted client gets its own child process, which sends back
 * exactly the bytes it receives until the client closes the connection.
 *
 * On start-up it prints one line to stderr:
 *     echo-server: listening on 0.0.0.0:PORT
 * with the real port number, so a script can start it on port 0 and
 * find out where it ended up.
 */

#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define BUF_SIZE 4096
#define BACKLOG 16

/*
 * Reap every child that has exited.  Without this, each finished child
 * stays in the process table as a zombie until the server exits.
 *
 * The loop matters: several children can exit while one SIGCHLD is
 * pending, and the kernel delivers only one signal for all of them.
 * WNOHANG keeps the handler from blocking while other children still run.
 *
 * waitpid() sets errno (ECHILD when nothing is left), and this handler
 * can interrupt the main program between a failing call and its perror(),
 * so errno is saved and restored.
 */
static void on_sigchld(int sig)
{
    int saved_errno = errno;

    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = saved_errno;
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

/* The child's whole job: echo until the client hangs up, then exit. */
static void serve_client(int fd)
{
    char buf[BUF_SIZE];

    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("echo-server: read");
            break;
        }
        if (n == 0)      /* client closed its end */
            break;
        /*
         * A write error (EPIPE, ECONNRESET) means the client has gone
         * away; there is nobody left to talk to, so this child just ends.
         */
        if (write_all(fd, buf, (size_t)n) < 0)
            break;
    }
    close(fd);
}

/* Parse PORT strictly: "80x" or "70000" should be an error, not a surprise. */
static int parse_port(const char *s)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0 || v > 65535)
        return -1;
    return (int)v;
}

int main(int argc, char *argv[])
{
    struct sockaddr_in addr;
    socklen_t addrlen;
    struct sigaction sa;
    int listen_fd;
    int port;
    int one = 1;

    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 1;
    }
    port = parse_port(argv[1]);
    if (port < 0) {
        fprintf(stderr, "echo-server: invalid port '%s'\n", argv[1]);
        return 1;
    }

    /*
     * Writing to a socket whose peer has closed raises SIGPIPE, whose
     * default action kills the process without a word.  Ignoring it turns
     * that into an ordinary EPIPE error from write(), which we can handle.
     * Children inherit this setting across fork().
     */
    signal(SIGPIPE, SIG_IGN);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sigemptyset(&sa.sa_mask);
    /*
     * SA_RESTART asks the kernel to resume most interrupted system calls
     * after the handler runs.  accept() may still fail with EINTR on some
     * systems, so the accept loop below checks for it anyway.
     */
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGCHLD, &sa, NULL) < 0) {
        perror("echo-server: sigaction");
        return 1;
    }

    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (listen_fd < 0) {
        perror("echo-server: socket");
        return 1;
    }

    /*
     * Without SO_REUSEADDR, restarting the server right after stopping it
     * fails with "Address already in use" while old connections sit in
     * TIME_WAIT.
     */
    if (setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) {
        perror("echo-server: setsockopt");
        return 1;
    }

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);   /* every local interface */
    addr.sin_port = htons((unsigned short)port);

    if (bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("echo-server: bind");
        return 1;
    }
    if (listen(listen_fd, BACKLOG) < 0) {
        perror("echo-server: listen");
        return 1;
    }

    /* With PORT 0 only the kernel knows which port we got; ask it. */
    addrlen = sizeof addr;
    if (getsockname(listen_fd, (struct sockaddr *)&addr, &addrlen) < 0) {
        perror("echo-server: getsockname");
        return 1;
    }
    fprintf(stderr, "echo-server: listening on 0.0.0.0:%d\n",
            (int)ntohs(addr.sin_port));
    fflush(stderr);

    for (;;) {
        int client_fd = accept(listen_fd, NULL, NULL);
        pid_t pid;

        if (client_fd < 0) {
            /*
             * EINTR: a child exited while we were waiting (SIGCHLD).
             * ECONNABORTED: the client gave up before we accepted it.
             * Neither is a problem with the server, so just try again.
             */
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("echo-server: accept");
            return 1;
        }

        pid = fork();
        if (pid < 0) {
            /* Out of processes: drop this client but keep serving others. */
            perror("echo-server: fork");
            close(client_fd);
            continue;
        }

        if (pid == 0) {
            /*
             * Child.  It never accepts, so it closes its copy of the
             * listening socket; otherwise the port would stay open for
             * as long as any child lives, even after the parent is gone.
             */
            close(listen_fd);
            serve_client(client_fd);
            /*
             * _exit() rather than exit(): the child shares copies of the
             * parent's stdio buffers, and exit() would flush them a
             * second time.
             */
            _exit(0);
        }

        /*
         * Parent.  The child owns the connection now.  If the parent kept
         * its copy, the client would never see EOF when the child closes
         * (the socket stays open while any process holds it), and the
         * parent would run out of file descriptors after enough clients.
         */
        close(client_fd);
    }
}
