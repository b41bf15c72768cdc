package redistest

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// quiet is how long a test waits to conclude that no reply came. A reply
// through the proxy takes well under a millisecond; a busy machine may
// delay one by tens of milliseconds, never by this much.
const quiet = 300 * time.Millisecond

// rawConn is a client connection with no library in between, so that a
// test sees exactly which replies arrive and when.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawConn{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// send writes inline commands.
func (c *rawConn) send(cmds ...string) {
	c.t.Helper()
	for _, cmd := range cmds {
		if _, err := c.conn.Write([]byte(cmd + "\r\n")); err != nil {
			c.t.Fatalf("send %q: %v", cmd, err)
		}
	}
}

// line reads one reply line within d.
func (c *rawConn) line(d time.Duration) (string, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	s, err := c.r.ReadString('\n')
	return strings.TrimRight(s, "\r\n"), err
}

func (c *rawConn) want(want string) {
	c.t.Helper()
	got, err := c.line(5 * time.Second)
	if err != nil || got != want {
		c.t.Fatalf("reply = %q, %v; want %q", got, err, want)
	}
}

func (c *rawConn) wantNothing() {
	c.t.Helper()
	got, err := c.line(quiet)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		c.t.Fatalf("got reply %q, %v; want none within %v", got, err, quiet)
	}
}

func TestProxyForwards(t *testing.T) {
	s := Start(t)
	p := StartProxy(t, s.Addr())
	if !strings.HasPrefix(p.Addr(), "127.0.0.1:") || p.Addr() == s.Addr() {
		t.Fatalf("Addr() = %q", p.Addr())
	}
	c := p.Client(t)
	ctx := context.Background()
	// A value larger than the proxy's buffers, both ways.
	big := strings.Repeat("x", 3*proxyChunk+7)
	if err := c.Set(ctx, "k", big, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Client(t).Get(ctx, "k").Result(); err != nil || got != big {
		t.Fatalf("GET k on the server: %d bytes, %v", len(got), err)
	}
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != big {
		t.Fatalf("GET k through the proxy: %d bytes, %v", len(got), err)
	}
	// A pipeline of many commands in one write.
	pipe := c.Pipeline()
	for range 500 {
		pipe.Incr(ctx, "n")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, "n").Int(); err != nil || got != 500 {
		t.Fatalf("n = %d, %v; want 500", got, err)
	}
	// Inline commands, as telnet sends them.
	raw := dialRaw(t, p.Addr())
	raw.send("PING")
	raw.want("+PONG")
}

// TestProxyUnixTarget: a Server on a unix socket is reached over TCP.
func TestProxyUnixTarget(t *testing.T) {
	s := Start(t, Unix())
	p := StartProxy(t, s.Addr())
	raw := dialRaw(t, p.Addr())
	raw.send("PING")
	raw.want("+PONG")
}

// TestProxyStallResume is the Redis that stalls past the call budget and
// then answers: the command runs, its reply is held, and Resume delivers
// it, in order, on the same connection.
func TestProxyStallResume(t *testing.T) {
	s := Start(t)
	p := StartProxy(t, s.Addr())
	direct := s.Client(t)
	ctx := context.Background()

	raw := dialRaw(t, p.Addr())
	raw.send("PING")
	raw.want("+PONG")

	p.Stall()
	raw.send("SET k v", "INCR n", "GET k")
	raw.wantNothing()
	// Redis ran the commands although no reply came back.
	if got, err := direct.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET k on the server during the stall = %q, %v; want v", got, err)
	}
	// A connection opened during the stall is stalled too.
	late := dialRaw(t, p.Addr())
	late.send("PING")
	late.wantNothing()

	p.Resume()
	raw.want("+OK")
	raw.want(":1")
	raw.want("$1")
	raw.want("v")
	late.want("+PONG")
	raw.send("PING")
	raw.want("+PONG")
}

// TestProxyStallGoRedis: a go-redis call whose reply is stalled returns
// once the proxy resumes, with the reply.
func TestProxyStallGoRedis(t *testing.T) {
	s := Start(t)
	p := StartProxy(t, s.Addr())
	opt := p.Options()
	opt.ReadTimeout = 10 * time.Second
	c := redis.NewClient(opt)
	defer c.Close()
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	p.Stall()
	got := make(chan string, 1)
	go func() {
		v, err := c.Get(ctx, "k").Result()
		if err != nil {
			v = "error: " + err.Error()
		}
		got <- v
	}()
	select {
	case v := <-got:
		t.Fatalf("GET returned %q during the stall", v)
	case <-time.After(quiet):
	}
	p.Resume()
	select {
	case v := <-got:
		if v != "v" {
			t.Fatalf("GET after Resume = %q, want v", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("GET did not return after Resume")
	}
}

// TestProxyDrop: replies are lost for good, the commands still run, and
// after Resume new replies flow.
func TestProxyDrop(t *testing.T) {
	s := Start(t)
	p := StartProxy(t, s.Addr())
	raw := dialRaw(t, p.Addr())

	p.Drop()
	raw.send("SET k v")
	raw.wantNothing()
	if got, err := s.Client(t).Get(context.Background(), "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET k on the server = %q, %v; want v", got, err)
	}
	p.Resume()
	raw.send("PING")
	raw.want("+PONG") // not +OK: the dropped reply is gone
}

// subscribe subscribes through c and waits for the confirmation.
func subscribe(t *testing.T, c *redis.Client, channel string) *redis.PubSub {
	t.Helper()
	ps := c.Subscribe(context.Background(), channel)
	t.Cleanup(func() { _ = ps.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return ps
}

// receive returns the next message's payload within d, or "" and false.
func receive(ps *redis.PubSub, d time.Duration) (string, bool) {
	select {
	case m := <-ps.Channel():
		return m.Payload, true
	case <-time.After(d):
		return "", false
	}
}

// TestProxySubscribers: a subscriber fault silences the subscription while
// commands through the same proxy work; a stalled message arrives after
// Resume, a dropped one never does.
func TestProxySubscribers(t *testing.T) {
	s := Start(t)
	p := StartProxy(t, s.Addr())
	c := p.Client(t)
	pub := s.Client(t)
	ctx := context.Background()
	ps := subscribe(t, c, "ch")

	p.StallSubscribers()
	if err := pub.Publish(ctx, "ch", "held").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("a command during StallSubscribers: %v", err)
	}
	if m, ok := receive(ps, quiet); ok {
		t.Fatalf("got %q during StallSubscribers", m)
	}
	p.Resume()
	if m, ok := receive(ps, 5*time.Second); !ok || m != "held" {
		t.Fatalf("after Resume got %q, %v; want the held message", m, ok)
	}

	p.DropSubscribers()
	if err := pub.Publish(ctx, "ch", "lost").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("a command during DropSubscribers: %v", err)
	}
	if m, ok := receive(ps, quiet); ok {
		t.Fatalf("got %q during DropSubscribers", m)
	}
	p.Resume()
	if err := pub.Publish(ctx, "ch", "after").Err(); err != nil {
		t.Fatal(err)
	}
	if m, ok := receive(ps, 5*time.Second); !ok || m != "after" {
		t.Fatalf("after Resume got %q, %v; want the next message, not the dropped one", m, ok)
	}
}

// TestProxyBlackholeSubscribers: a subscription that lost a message stays
// silent after Resume, as a black-holed TCP connection does; one that lost
// nothing, and one made after Resume, get messages again; commands work
// throughout.
func TestProxyBlackholeSubscribers(t *testing.T) {
	s := Start(t)
	p := StartProxy(t, s.Addr())
	c := p.Client(t)
	pub := s.Client(t)
	ctx := context.Background()
	lost, quietSub := subscribe(t, c, "ch"), subscribe(t, c, "other")

	p.BlackholeSubscribers()
	if err := pub.Publish(ctx, "ch", "lost").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("a command during BlackholeSubscribers: %v", err)
	}
	if m, ok := receive(lost, quiet); ok {
		t.Fatalf("got %q during BlackholeSubscribers", m)
	}
	p.Resume()
	fresh := subscribe(t, c, "ch")
	for _, ch := range []string{"ch", "other"} {
		if err := pub.Publish(ctx, ch, "after").Err(); err != nil {
			t.Fatal(err)
		}
	}
	if m, ok := receive(fresh, 5*time.Second); !ok || m != "after" {
		t.Fatalf("subscription made after Resume got %q, %v", m, ok)
	}
	if m, ok := receive(quietSub, 5*time.Second); !ok || m != "after" {
		t.Fatalf("subscription that lost nothing got %q, %v", m, ok)
	}
	if m, ok := receive(lost, quiet); ok {
		t.Fatalf("black-holed subscription got %q after Resume; want silence for good", m)
	}
}

// TestProxyStallNext: the connection that sends the command (by name, any
// case) has its replies held until release, while other connections and
// a later same command elsewhere work; the subscriber fault set meanwhile
// outlives the release.
func TestProxyStallNext(t *testing.T) {
	s := Start(t)
	p := StartProxy(t, s.Addr())
	held, other := dialRaw(t, p.Addr()), dialRaw(t, p.Addr())
	seen, release := p.StallNext("HGETALL")

	other.send("HSET h f v")
	other.want(":1")
	select {
	case <-seen:
		t.Fatal("seen closed before any HGETALL")
	default:
	}
	held.send("hgetall h")
	select {
	case <-seen:
	case <-time.After(5 * time.Second):
		t.Fatal("seen not closed after HGETALL")
	}
	held.wantNothing()
	other.send("HGETALL h") // matched once only
	other.want("*2")
	other.want("$1")
	other.want("f")
	other.want("$1")
	other.want("v")
	held.send("PING") // queued behind the held reply
	held.wantNothing()

	sub := p.Client(t)
	ps := subscribe(t, sub, "ch")
	p.DropSubscribers()
	release()
	release() // idempotent
	held.want("*2")
	for _, w := range []string{"$1", "f", "$1", "v", "+PONG"} {
		held.want(w)
	}
	if err := s.Client(t).Publish(context.Background(), "ch", "lost").Err(); err != nil {
		t.Fatal(err)
	}
	if m, ok := receive(ps, quiet); ok {
		t.Fatalf("got %q after release: DropSubscribers must still hold", m)
	}
}

// TestProxyNotRESP: bytes that are not a RESP command are passed through.
func TestProxyNotRESP(t *testing.T) {
	s := Start(t)
	p := StartProxy(t, s.Addr())
	raw := dialRaw(t, p.Addr())
	raw.send("*x")
	raw.want("-ERR Protocol error: invalid multibulk length")
}

// TestProxyTargetDown: with no server behind it, the proxy closes the
// client's connection, as a refused connection would be seen.
func TestProxyTargetDown(t *testing.T) {
	s := Start(t)
	p := StartProxy(t, s.Addr())
	s.Stop(t)
	raw := dialRaw(t, p.Addr())
	if got, err := raw.line(5 * time.Second); err != io.EOF {
		t.Fatalf("read = %q, %v; want EOF", got, err)
	}
}

// TestProxyCloseLeavesNothing: Close with connections open and replies
// held ends every goroutine of the proxy and closes the clients'
// connections.
func TestProxyCloseLeavesNothing(t *testing.T) {
	s := Start(t)
	before := goleak.IgnoreCurrent()
	p := StartProxy(t, s.Addr())
	held := dialRaw(t, p.Addr())
	idle := dialRaw(t, p.Addr())
	idle.send("PING")
	idle.want("+PONG")
	p.Stall()
	held.send("PING")
	held.wantNothing()

	p.Close()
	p.Close() // idempotent
	for _, c := range []*rawConn{held, idle} {
		if got, err := c.line(5 * time.Second); err == nil {
			t.Fatalf("read after Close = %q, want the connection closed", got)
		}
	}
	if err := goleak.Find(before); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("the proxy still accepts connections after Close")
	}
}
