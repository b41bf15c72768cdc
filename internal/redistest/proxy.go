package redistest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// proxyChunk is the most a proxied connection holds in the proxy's
	// memory while its replies are stalled: one read from the server.
	// What Redis sends beyond it waits in the kernel's socket buffers and
	// then in Redis's own client output buffer (whose limits apply: Redis
	// drops a pub/sub client past 32 MiB by default).
	proxyChunk = 32 << 10
	// proxyDialTimeout bounds how long the proxy waits to connect to its
	// target for each accepted connection.
	proxyDialTimeout = 2 * time.Second
	// maxCommandName is the longest command name the proxy reads to tell
	// pub/sub connections apart; longer first arguments are copied through
	// unread.
	maxCommandName = 64
)

// fault is what the proxy does with replies.
type fault int

const (
	pass      fault = iota // forward replies
	stall                  // hold replies until Resume
	drop                   // swallow replies until Resume
	blackhole              // swallow replies; a connection that lost one stays silent for good
)

// Proxy is a TCP proxy between clients and a Redis server that injects
// faults into the replies: it can hold them (Stall) or swallow them (Drop)
// while the requests still reach Redis, which runs them. That is a Redis
// that stalls past a client's call budget and answers late, or a
// connection black-holed by the network, with no change to the server.
//
// A fault applies to the connections open when it is set and to the ones
// accepted later, until Resume. The last call among Stall, Drop,
// StallSubscribers, DropSubscribers, BlackholeSubscribers and Resume wins. To fault one client
// and not another, give each its own Proxy.
//
// Its methods are safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup // the accept loop and every connection's goroutines
	done   chan struct{}  // closed by Close

	mu       sync.Mutex
	fault    fault
	subsOnly bool          // the fault applies only to pub/sub connections
	changed  chan struct{} // closed and replaced when the fault changes
	conns    map[*proxyConn]struct{}
	closed   bool
	next     []*commandStall // StallNext calls not yet matched by a command
}

// commandStall is one StallNext: the connection that sends the command
// holds its replies until release is closed.
type commandStall struct {
	command string        // lower case
	seen    chan struct{} // closed when a connection sent the command
	release chan struct{} // closed by the release func
	once    sync.Once
}

// proxyConn is one client connection and the proxy's connection to Redis.
type proxyConn struct {
	client, server net.Conn
	subscriber     atomic.Bool                  // the client sent SUBSCRIBE, PSUBSCRIBE or SSUBSCRIBE
	stalled        atomic.Pointer[commandStall] // a StallNext this connection matched, until released
	severed        atomic.Bool                  // lost a reply to BlackholeSubscribers: silent for good
	closed         chan struct{}                // closed once both connections are closed
	closeOnce      sync.Once
}

func (c *proxyConn) close() {
	c.closeOnce.Do(func() {
		_ = c.client.Close()
		_ = c.server.Close()
		close(c.closed)
	})
}

// StartProxy starts a proxy on a free port of 127.0.0.1 that forwards
// every connection to target: "host:port", or the path of a unix socket
// (a Server's Addr). It starts with no fault. It is closed when the test
// ends (tb.Cleanup).
func StartProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("redistest: proxy listen: %v", err)
	}
	p := &Proxy{
		target:  target,
		ln:      ln,
		done:    make(chan struct{}),
		changed: make(chan struct{}),
		conns:   make(map[*proxyConn]struct{}),
	}
	tb.Cleanup(p.Close)
	p.wg.Add(1)
	go p.acceptLoop()
	return p
}

// Addr returns the address the proxy listens on, "127.0.0.1:PORT".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Options returns new go-redis options that connect through the proxy.
// The caller may change them.
func (p *Proxy) Options() *redis.Options {
	return &redis.Options{Addr: p.Addr()}
}

// Client returns a new go-redis client that connects through the proxy.
// It is closed when the test ends.
func (p *Proxy) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(p.Options())
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Stall holds every reply from Redis until Resume, which delivers them in
// order. Requests still reach Redis and run.
func (p *Proxy) Stall() { p.set(stall, false) }

// Drop swallows every reply from Redis until Resume: the client never
// sees them, although Redis ran the requests. Drop works on bytes, not on
// replies: a reply in flight when Drop or Resume is called may be cut, so
// a client that keeps the connection after Resume may read garbage; go-redis
// closes a connection whose read timed out.
func (p *Proxy) Drop() { p.set(drop, false) }

// StallSubscribers is Stall for the pub/sub connections only: those on
// which the client sent SUBSCRIBE, PSUBSCRIBE or SSUBSCRIBE. Other
// connections work normally.
func (p *Proxy) StallSubscribers() { p.set(stall, true) }

// DropSubscribers is Drop for the pub/sub connections only (see
// StallSubscribers): the subscription goes silent while commands work.
func (p *Proxy) DropSubscribers() { p.set(drop, true) }

// BlackholeSubscribers is DropSubscribers as a black-holed TCP connection
// has it: a pub/sub connection that lost a reply stays silent for good,
// even after Resume (bytes a stream lost cannot come back; what its client
// would read next is cut). Pub/sub connections that lost nothing, and the
// ones made after Resume, flow again. For a client that must notice the
// silence and replace its connection.
func (p *Proxy) BlackholeSubscribers() { p.set(blackhole, true) }

// Resume ends the fault: held replies are delivered, and replies flow
// again (except on connections BlackholeSubscribers silenced for good).
func (p *Proxy) Resume() { p.set(pass, false) }

// StallNext holds the replies of the next connection that sends command
// (case-insensitive, as the command's name: "HGETALL", not a script that
// calls it), from the moment the command is seen, until release is called:
// that command's reply and any reply to that connection not delivered yet.
// Other connections are not affected, so a test can hold one reply (a
// reload under way) while the same client's other connections work. It is
// independent of Stall, Drop and Resume, which apply to the connection
// again once it is released. seen is closed when a connection has sent the
// command, before the command reaches Redis. A connection already held by
// a StallNext does not match another. release may be called more than
// once; Close discards the held replies.
func (p *Proxy) StallNext(command string) (seen <-chan struct{}, release func()) {
	cs := &commandStall{command: strings.ToLower(command), seen: make(chan struct{}), release: make(chan struct{})}
	p.mu.Lock()
	p.next = append(p.next, cs)
	p.mu.Unlock()
	return cs.seen, func() { cs.once.Do(func() { close(cs.release) }) }
}

// matchStall gives c the first pending StallNext for the command name, if
// c is not held by one already.
func (p *Proxy) matchStall(c *proxyConn, name string) {
	if name == "" || c.stalled.Load() != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, cs := range p.next {
		if cs.command == strings.ToLower(name) {
			p.next = slices.Delete(p.next, i, i+1)
			c.stalled.Store(cs)
			close(cs.seen)
			return
		}
	}
}

func (p *Proxy) set(f fault, subsOnly bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault, p.subsOnly = f, subsOnly
	close(p.changed)
	p.changed = make(chan struct{})
}

// faultFor returns the fault that applies to c now and a channel closed
// when it changes.
func (p *Proxy) faultFor(c *proxyConn) (fault, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.subsOnly && !c.subscriber.Load() {
		return pass, p.changed
	}
	return p.fault, p.changed
}

// Close stops the proxy: it closes the listener and every connection,
// discards held replies, and returns once all its goroutines have ended.
// Closing twice does nothing.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.done)
	_ = p.ln.Close()
	for c := range p.conns {
		c.close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			// Closed by Close; a proxy for tests has no other error to
			// survive.
			return
		}
		p.wg.Add(1)
		go p.serve(client)
	}
}

// serve connects client to the target and forwards both ways until either
// side closes or the proxy is closed.
func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	network := "tcp"
	if strings.HasPrefix(p.target, "/") {
		network = "unix"
	}
	server, err := net.DialTimeout(network, p.target, proxyDialTimeout)
	if err != nil {
		// As a dead server would: the client sees the connection close.
		_ = client.Close()
		return
	}
	c := &proxyConn{client: client, server: server, closed: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.close()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()

	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer c.close()
		p.forwardReplies(c)
	}()
	p.forwardRequests(c)
	c.close()

	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// forwardReplies copies what Redis sends to the client, applying the
// fault, until either side closes.
func (p *Proxy) forwardReplies(c *proxyConn) {
	buf := make([]byte, proxyChunk)
	for {
		n, err := c.server.Read(buf)
		if n > 0 && !p.deliver(c, buf[:n]) {
			return
		}
		if err != nil {
			return
		}
	}
}

// deliver writes b to the client, holds it while the connection is
// stalled (by the fault, or by a StallNext until released), or discards it
// while it is dropped and once it is severed. It reports false when the
// connection or the proxy closed.
func (p *Proxy) deliver(c *proxyConn, b []byte) bool {
	if cs := c.stalled.Load(); cs != nil {
		select {
		case <-cs.release:
			c.stalled.Store(nil)
		case <-c.closed:
			return false
		case <-p.done:
			return false
		}
	}
	for {
		if c.severed.Load() {
			return true
		}
		f, changed := p.faultFor(c)
		switch f {
		case pass:
			_, err := c.client.Write(b)
			return err == nil
		case drop:
			return true
		case blackhole:
			c.severed.Store(true)
			return true
		}
		select {
		case <-changed:
		case <-c.closed:
			return false
		case <-p.done:
			return false
		}
	}
}

// forwardRequests copies what the client sends to Redis, command by
// command, marks the connection as a subscriber when it sends a subscribe
// command, and matches StallNext calls. Input that is not RESP is copied
// through unread.
func (p *Proxy) forwardRequests(c *proxyConn) {
	r := bufio.NewReaderSize(c.client, proxyChunk)
	w := bufio.NewWriterSize(c.server, proxyChunk)
	for {
		name, err := forwardCommand(r, w)
		if isSubscribe(name) {
			// Before the command reaches Redis, so that a subscriber
			// fault already covers its first reply.
			c.subscriber.Store(true)
		}
		if err == nil {
			// Before the command reaches Redis too: its reply is held.
			p.matchStall(c, name)
		}
		if errors.Is(err, errNotRESP) {
			if w.Flush() == nil {
				_, _ = io.Copy(c.server, r)
			}
			return
		}
		if err != nil {
			return
		}
		// Flush each command, so that it reaches Redis before the proxy
		// waits for the next one.
		if w.Flush() != nil {
			return
		}
	}
}

func isSubscribe(name string) bool {
	switch strings.ToLower(name) {
	case "subscribe", "psubscribe", "ssubscribe":
		return true
	}
	return false
}
