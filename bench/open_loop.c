/* Open-loop HTTP/1.1 load generator for bench/open_loop.py: one thread, epoll, keep-alive connections.

   open_loop URL BODY_FILE RATE SECONDS CONNS [HEADER_LINE ...]

   Request i is due at START + i / RATE (START: 0.5 s after every connection is open), for SECONDS. A periodic
   timerfd (CLOCK_MONOTONIC, absolute) wakes the loop at each due time (no spinning); the request goes out then
   on the connection idle longest and is timed from that send. When no connection is idle it is late: it waits
   (FIFO) for the next one to free up and is timed from its due time (coordinated omission corrected).
   An answer is timed by the kernel (SO_TIMESTAMPNS: when its last bytes reached the socket), so this thread's
   own wake-up delays do not count; the sockets are read at each due time, after the send (before it too when
   no connection is known idle), and at once only while late requests wait or a write is pending: one wake-up
   a request, not two.
   Output (stdout): "answered late bad socket_errors unanswered window_us lag_p50_us lag_p99_us lag_max_us", then
   each answer's latency in us, one a line. lag: how long after its due time an on-time request went out. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum { DOWN, CONNECTING, IDLE, BUSY };
enum { HEAD, BODY, CHUNK_LINE, CHUNK_DATA, TRAILER };
#define BUF 16384
#define S 1000000000LL
#define LEAD_NS (S / 2)
#define DRAIN_NS (30 * S)

typedef struct {
  int fd, state, in_ring, parse, status, close_after, wout;  /* wout: waiting to write the rest of the request */
  size_t off, have;
  long long left, from, retry;  /* from: the time its latency counts from (its send, or its due time if late) */
  char buf[BUF];
} conn_t;

static struct addrinfo *addr;
static conn_t *cs;
static int nconns, es, *ring, ring_head, ring_len, connected, ndown, writing;
static char *req;
static size_t req_len;
static long long start, interval, total, checked, sent, answered, late, bad, errors, last_answer, clock_offset;
static long long *lat, *lag, nlag;

static long long clock_ns(clockid_t id) {
  struct timespec ts;
  return clock_gettime(id, &ts), ts.tv_sec * S + ts.tv_nsec;
}
static long long now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
static long long due_ns(long long i) { return start + i * interval; }
static void die(const char *what) { perror(what); exit(2); }

static void push_idle(int k) {
  cs[k].state = IDLE;
  if (!cs[k].in_ring) ring[(ring_head + ring_len++) % nconns] = k, cs[k].in_ring = 1;
}
static int pop_idle(void) {  /* the connection idle longest; entries of connections no longer idle are skipped */
  while (ring_len > 0) {
    int k = ring[ring_head];
    ring_head = (ring_head + 1) % nconns, ring_len--, cs[k].in_ring = 0;
    if (cs[k].state == IDLE) return k;
  }
  return -1;
}

static void watch(int k, uint32_t events, int op) {
  struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)k};
  if (epoll_ctl(es, op, cs[k].fd, &ev) < 0) die("epoll_ctl");
}

static void down(int k) {  /* a connect failed: tried again 100 ms later */
  close(cs[k].fd), cs[k].fd = -1, cs[k].state = DOWN, cs[k].retry = now_ns() + S / 10, errors++, ndown++;
}

static void open_conn(int k) {
  conn_t *c = &cs[k];
  if ((c->fd = socket(addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0) die("socket");
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(c->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
  c->have = 0, c->close_after = 0, c->wout = 0, c->state = CONNECTING;
  if (connect(c->fd, addr->ai_addr, addr->ai_addrlen) < 0 && errno != EINPROGRESS) down(k);
  else watch(k, EPOLLIN | EPOLLOUT, EPOLL_CTL_ADD);
}

static void reopen(int k, int failed) {  /* failed: the connection broke (its request is lost), else a close */
  writing -= cs[k].wout;
  errors += failed;
  close(cs[k].fd), cs[k].fd = -1;
  open_conn(k);
}

static void revive(void) {  /* reopen the connections whose connect failed, 100 ms after */
  long long now = now_ns();
  for (int k = 0; k < nconns && ndown > 0; k++)
    if (cs[k].state == DOWN && cs[k].retry <= now) ndown--, open_conn(k);
}

static void flush(int k) {  /* write what is left of the request; the rest once the socket takes more */
  conn_t *c = &cs[k];
  ssize_t n = 1;
  while (c->off < req_len && (n = send(c->fd, req + c->off, req_len - c->off, MSG_NOSIGNAL)) > 0) c->off += (size_t)n;
  if (n < 0 && errno == EAGAIN && !c->wout) watch(k, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD), c->wout = 1, writing++;
  else if (n < 0 && errno != EAGAIN) reopen(k, 1);
}

static void send_req(int k, long long from) {
  cs[k].state = BUSY, cs[k].off = 0, cs[k].from = from, cs[k].parse = HEAD, sent++;
  flush(k);
}

static void next(int k) {  /* a connection free: the oldest late request, if one waits */
  if (sent < checked) send_req(k, due_ns(sent));
  else push_idle(k);
}

static void harvest(int timeout_ms);

static void dispatch(void) {  /* send every request now due, in order; late ones wait for a free connection */
  for (long long now = now_ns(), fresh = 0; checked < total && due_ns(checked) <= now; checked++) {
    int k = sent == checked ? pop_idle() : -1;
    if (k < 0 && sent == checked && !fresh++) harvest(0), k = pop_idle();  /* the answers in free theirs */
    if (k < 0) { late++; continue; }
    long long t = now_ns();
    lag[nlag++] = t - due_ns(checked);
    send_req(k, t);
  }
}

static void consume(conn_t *c, size_t n) { memmove(c->buf, c->buf + n, c->have - n), c->have -= n; }

static char *header(char *head, const char *name) {  /* the value of header `name` in a NUL-ended head, or NULL */
  size_t len = strlen(name);
  for (char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n"))
    if (strncasecmp(p + 2, name, len) == 0 && p[2 + len] == ':') return p + 3 + len + strspn(p + 3 + len, " \t");
  return NULL;
}

/* Parse what has arrived; returns 1 once the whole answer is in, 0 if more is needed, -1 on error. */
static int parse(conn_t *c) {
  for (;;) {
    char *eol;
    if (c->parse == HEAD) {
      char *end = memmem(c->buf, c->have, "\r\n\r\n", 4);
      if (!end) return c->have == BUF ? -1 : 0;
      *end = 0;
      if (strncmp(c->buf, "HTTP/1.", 7) != 0 || end - c->buf < 12) return -1;
      c->status = atoi(c->buf + 9);
      char *cl = header(c->buf, "content-length"), *te = header(c->buf, "transfer-encoding");
      char *conn = header(c->buf, "connection");
      c->close_after = conn && strncasecmp(conn, "close", 5) == 0;
      if (te && strncasecmp(te, "chunked", 7) == 0) c->parse = CHUNK_LINE;
      else if (cl) c->parse = BODY, c->left = atoll(cl);
      else if (c->status == 204 || c->status == 304) c->parse = BODY, c->left = 0;
      else return -1;  /* a body up to the close: not supported */
      consume(c, (size_t)(end + 4 - c->buf));
    } else if (c->parse == BODY || c->parse == CHUNK_DATA) {
      size_t n = c->left < (long long)c->have ? (size_t)c->left : c->have;
      consume(c, n), c->left -= (long long)n;
      if (c->left > 0) return 0;
      if (c->parse == BODY) return 1;
      c->parse = CHUNK_LINE;
    } else {  /* CHUNK_LINE: "<hex size>[;ext]\r\n"; TRAILER: header lines up to an empty one */
      if (!(eol = memmem(c->buf, c->have, "\r\n", 2))) return c->have == BUF ? -1 : 0;
      size_t n = (size_t)(eol + 2 - c->buf);
      if (c->parse == TRAILER && n == 2) return consume(c, n), 1;  /* the empty line: the end */
      if (c->parse == CHUNK_LINE) {
        long long size = strtoll(c->buf, NULL, 16);
        c->parse = size > 0 ? CHUNK_DATA : TRAILER, c->left = size + 2;  /* its data and the CRLF after it */
      }
      consume(c, n);
    }
  }
}

static void on_event(int k, uint32_t events) {
  conn_t *c = &cs[k];
  if (c->state == CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err || (events & (EPOLLERR | EPOLLHUP))) down(k);
    else if (events & EPOLLOUT) watch(k, EPOLLIN, EPOLL_CTL_MOD), connected++, start ? next(k) : push_idle(k);
    return;
  }
  if ((events & EPOLLOUT) && c->state == BUSY && c->off < req_len) {
    flush(k);
    if (c->fd < 0 || c->state != BUSY) return;
    if (c->off == req_len) watch(k, EPOLLIN, EPOLL_CTL_MOD), c->wout = 0, writing--;
  }
  for (int r = 0; r == 0;) {  /* read until the answer is whole, or the socket has no more */
    char ctl[64];
    size_t space = BUF - c->have;
    struct iovec iov = {c->buf + c->have, space};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    ssize_t n = recvmsg(c->fd, &msg, 0);
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0 || c->state != BUSY) {  /* closed while idle (the server's keep-alive timeout): not an error */
      reopen(k, n > 0 || c->state == BUSY);
      return;
    }
    long long at = 0;
    for (struct cmsghdr *m = CMSG_FIRSTHDR(&msg); m; m = CMSG_NXTHDR(&msg, m))
      if (m->cmsg_level == SOL_SOCKET && m->cmsg_type == SCM_TIMESTAMPNS) {
        struct timespec ts;
        memcpy(&ts, CMSG_DATA(m), sizeof ts);
        at = ts.tv_sec * S + ts.tv_nsec - clock_offset;  /* CLOCK_REALTIME to CLOCK_MONOTONIC */
      }
    c->have += (size_t)n;
    if ((r = parse(c)) < 0 || (r == 0 && (size_t)n < space)) {  /* bad, or the rest is not in yet */
      if (r < 0) reopen(k, 1);
      return;
    }
    if (r == 0) continue;
    at = at ? at : now_ns();
    lat[answered++] = (at - c->from) / 1000;
    last_answer = at > last_answer ? at : last_answer;
    if (c->status > 299) bad++;
    if (c->have > 0 || c->close_after) reopen(k, c->have > 0);  /* bytes after the answer: bad framing */
    else next(k);
  }
}

static void harvest(int timeout_ms) {  /* every socket event waiting */
  struct epoll_event evs[256];
  int n = epoll_wait(es, evs, 256, timeout_ms);
  clock_offset = clock_ns(CLOCK_REALTIME) - now_ns();
  for (int i = 0; i < n; i++) on_event((int)evs[i].data.u32, evs[i].events);
}

static int cmp(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return (x > y) - (x < y);
}
static long long rank(long long *v, long long n, double q) {  /* nearest rank, as percentile() in open_loop.py */
  long long i = llrint(q / 100 * (double)n + 0.5) - 1;  /* Python's round(): half to even */
  return n ? v[i < 0 ? 0 : i >= n ? n - 1 : i] : 0;
}

int main(int argc, char **argv) {
  if (argc < 6) { fprintf(stderr, "usage: %s URL BODY_FILE RATE SECONDS CONNS [HEADER ...]\n", argv[0]); return 2; }
  char host[256], port[16] = "80", path[2048] = "/";
  if (sscanf(argv[1], "http://%255[^:/]:%15[0-9]%2047s", host, port, path) < 2 &&
      sscanf(argv[1], "http://%255[^:/]%2047s", host, path) < 1) {
    fprintf(stderr, "not an http:// URL: %s\n", argv[1]);
    return 2;
  }
  double rate = atof(argv[3]);
  nconns = atoi(argv[5]), total = (long long)(atof(argv[4]) * rate);
  if (rate > 0) interval = llround(1e9 / rate);
  if (interval < 1 || nconns < 1 || total < 1) { fprintf(stderr, "bad RATE, SECONDS or CONNS\n"); return 2; }
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  int gai = getaddrinfo(host, port, &hints, &addr);
  if (gai) { fprintf(stderr, "%s: %s\n", host, gai_strerror(gai)); return 2; }

  FILE *f = fopen(argv[2], "rb");
  if (!f || fseek(f, 0, SEEK_END) < 0) die(argv[2]);
  long body = ftell(f);
  size_t extra = 0;
  for (int i = 6; i < argc; i++) extra += strlen(argv[i]) + 2;
  req = malloc(4096 + extra + (size_t)body);
  int head = sprintf(req, "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %ld\r\n", path, host, port, body);
  for (int i = 6; i < argc; i++) head += sprintf(req + head, "%s\r\n", argv[i]);
  head += sprintf(req + head, "\r\n");
  if (fseek(f, 0, SEEK_SET) < 0 || fread(req + head, 1, (size_t)body, f) != (size_t)body) die("read body");
  fclose(f);
  req_len = (size_t)head + (size_t)body;

  prctl(PR_SET_TIMERSLACK, 1UL);  /* epoll_wait's own timeouts to the microsecond */
  cs = calloc((size_t)nconns, sizeof *cs), ring = calloc((size_t)nconns, sizeof *ring);
  lat = malloc((size_t)total * sizeof *lat), lag = malloc((size_t)total * sizeof *lag);
  int ep = epoll_create1(EPOLL_CLOEXEC), tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  struct epoll_event tev = {.events = EPOLLIN, .data.u32 = 0}, sev = {.events = EPOLLIN, .data.u32 = 1};
  if ((es = epoll_create1(EPOLL_CLOEXEC)) < 0 || ep < 0 || tfd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev) < 0)
    die("epoll/timerfd");
  for (int k = 0; k < nconns; k++) open_conn(k);
  for (long long open_by = now_ns() + 5 * S; connected < nconns; harvest(100))
    if (errors || now_ns() > open_by) { fprintf(stderr, "cannot connect to %s\n", argv[1]); return 2; }

  start = now_ns() + LEAD_NS;
  struct itimerspec its = {{interval / S, interval % S}, {start / S, start % S}};
  if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");  /* every due time */
  int watching = 0;
  for (long long drain_by = 0;;) {
    int want = sent < checked || writing > 0 || checked == total;  /* wake up for each socket event */
    if (want != watching && epoll_ctl(ep, want ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, es, &sev) < 0) die("epoll_ctl");
    watching = want;
    if (checked == total) {
      struct itimerspec off = {{0, 0}, {0, 0}};
      if (!drain_by) timerfd_settime(tfd, 0, &off, NULL), drain_by = now_ns() + DRAIN_NS;
      revive();
      int busy = sent < total;
      for (int k = 0; k < nconns; k++) busy |= cs[k].state == BUSY;
      if (!busy || now_ns() > drain_by) break;
    }
    struct epoll_event evs[2];
    int n = epoll_wait(ep, evs, 2, checked < total ? -1 : 100), tick = 0;
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) tick |= evs[i].data.u32 == 0;
    uint64_t ticks;
    if (tick) dispatch(), revive();
    if (tick && read(tfd, &ticks, sizeof ticks) < 0 && errno != EAGAIN) die("read timerfd");  /* re-arms it */
    harvest(0);  /* the answers in: their connections free for the next due time */
  }
  qsort(lag, (size_t)nlag, sizeof *lag, cmp);
  printf("%lld %lld %lld %lld %lld %lld %lld %lld %lld\n", answered, late, bad, errors, total - answered,
         answered ? (last_answer - start) / 1000 : 0, rank(lag, nlag, 50) / 1000, rank(lag, nlag, 99) / 1000,
         nlag ? lag[nlag - 1] / 1000 : 0);
  for (long long i = 0; i < answered; i++) printf("%lld\n", lat[i]);
  return 0;
}
