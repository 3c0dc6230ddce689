/* SPDX-License-Identifier: MIT */
/*
 * The address grammar of the library: es_addr_parse() turns
 * "127.0.0.1:8080", "[::1]:0" or "unix:/path" into a socket address. It is
 * the one parser for such strings: es_listen() (acceptor.c) and the HTTP
 * server's es_http_server_listen() both call it, so an address one of them
 * takes the other takes too. Numeric only: names need the resolver thread
 * and belong to es_connect(), which takes host and port apart.
 */
#include <eventserver/conn.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

/* Longest host part we look at: an IPv6 address in brackets. */
#define HOST_MAX INET6_ADDRSTRLEN

/* "1" to "65535" (up to 5 digits, leading zeros allowed): the port. */
static int parse_port(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 5)
        return -EINVAL;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -EINVAL;
        v = v * 10 + (p[i] - '0');
    }
    return v <= 65535 ? (int)v : -EINVAL;
}

static int parse_unix(const char *path, struct sockaddr_storage *ss,
                      socklen_t *len)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n == 0)
        return -EINVAL;
    if (n >= sizeof(un.sun_path))
        return -ENAMETOOLONG;
    memcpy(un.sun_path, path, n + 1);
    if (ss)
        memcpy(ss, &un, sizeof(un));
    if (len)
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

/* The host part [h, h + hl) as an IPv4 or (bracketed) IPv6 address. */
static int parse_ip(const char *h, size_t hl, int port,
                    struct sockaddr_storage *ss, socklen_t *len)
{
    char host[HOST_MAX + 2];
    bool v6 = hl >= 2 && h[0] == '[' && h[hl - 1] == ']';
    if (v6) {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof(host))
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    struct sockaddr_storage tmp;
    memset(&tmp, 0, sizeof(tmp));
    struct sockaddr_in *v4a = (struct sockaddr_in *)&tmp;
    struct sockaddr_in6 *v6a = (struct sockaddr_in6 *)&tmp;
    socklen_t l;
    if (!v6 && inet_pton(AF_INET, host, &v4a->sin_addr) == 1) {
        v4a->sin_family = AF_INET;
        v4a->sin_port = htons((uint16_t)port);
        l = sizeof(*v4a);
    } else if (v6 && inet_pton(AF_INET6, host, &v6a->sin6_addr) == 1) {
        v6a->sin6_family = AF_INET6;
        v6a->sin6_port = htons((uint16_t)port);
        l = sizeof(*v6a);
    } else {
        return -EINVAL;
    }
    if (ss)
        *ss = tmp;
    if (len)
        *len = l;
    return 0;
}

int es_addr_parse(const char *address, struct sockaddr_storage *ss,
                  socklen_t *len)
{
    if (!address)
        return -EINVAL;
    if (strncmp(address, "unix:", 5) == 0)
        return parse_unix(address + 5, ss, len);
    const char *colon = strrchr(address, ':');
    if (!colon)
        return -EINVAL;
    int port = parse_port(colon + 1);
    if (port < 0)
        return port;
    return parse_ip(address, (size_t)(colon - address), port, ss, len);
}
