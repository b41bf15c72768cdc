package cronguard

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cronguard/cronguard/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// ksTestProxy is a minimal test-only TCP proxy in front of a redis-server,
// for the kill switch tests. It can black-hole the replies on the
// connections that sent SUBSCRIBE (the subscription goes silent while
// command connections work; a connection that was black-holed stays so),
// and hold the reply to the next HGETALL until
// released. It stands in for the stall/drop proxy planned for
// internal/redistest: swap it for that one once it is merged.
type ksTestProxy struct {
	ln     net.Listener
	target string

	blackholeSubs atomic.Bool // drop every reply on subscriber connections
	holdHGETALL   atomic.Bool // hold the reply of the next HGETALL sent
	held          atomic.Int32
	release       chan struct{} // closed by releaseHeld
	releaseOnce   sync.Once
	done          chan struct{} // closed by close

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// ksStartProxy starts a proxy to srv, closed when the test ends (after the
// clients made later).
func ksStartProxy(t *testing.T, srv *redistest.Server) *ksTestProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &ksTestProxy{ln: ln, target: srv.Addr(), conns: map[net.Conn]struct{}{},
		release: make(chan struct{}), done: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// client returns a go-redis client that goes through the proxy.
func (p *ksTestProxy) client(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: p.ln.Addr().String()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// releaseHeld lets the held replies go (once).
func (p *ksTestProxy) releaseHeld() { p.releaseOnce.Do(func() { close(p.release) }) }

func (p *ksTestProxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = down.Close()
			continue
		}
		if !p.track(down, up) {
			return
		}
		c := &ksProxyConn{p: p, down: down, up: up}
		p.wg.Add(2)
		go c.requests()
		go c.replies()
	}
}

// track records the connections, or closes them when the proxy is closed.
func (p *ksTestProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		if p.closed {
			_ = c.Close()
			continue
		}
		p.conns[c] = struct{}{}
	}
	return !p.closed
}

func (p *ksTestProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	p.closed = true
	close(p.done)
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// ksProxyConn is one client connection through the proxy.
type ksProxyConn struct {
	p          *ksTestProxy
	down, up   net.Conn
	subscriber atomic.Bool // the client sent SUBSCRIBE
	silent     bool        // black-holed for good (replies goroutine only)
	hold       atomic.Bool // the next reply waits for the release
}

// requests copies the client's commands to Redis, noting SUBSCRIBE and a
// held HGETALL before forwarding them (so no reply can overtake the note).
func (c *ksProxyConn) requests() {
	defer c.p.wg.Done()
	defer c.up.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.down.Read(buf)
		if n > 0 {
			lower := bytes.ToLower(buf[:n])
			if bytes.Contains(lower, []byte("subscribe")) {
				c.subscriber.Store(true)
			}
			if bytes.Contains(lower, []byte("hgetall")) && c.p.holdHGETALL.CompareAndSwap(true, false) {
				c.hold.Store(true)
				c.p.held.Add(1)
			}
			if _, werr := c.up.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// replies copies Redis's replies to the client, unless black-holed or held.
func (c *ksProxyConn) replies() {
	defer c.p.wg.Done()
	defer c.down.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.up.Read(buf)
		if n > 0 {
			if c.hold.Load() {
				select {
				case <-c.p.release:
				case <-c.p.done:
					return
				}
				c.hold.Store(false)
			}
			if c.subscriber.Load() && c.p.blackholeSubs.Load() {
				// Like a real black hole, for good: bytes a TCP stream
				// lost cannot come back. New connections are not silent
				// once blackholeSubs is off.
				c.silent = true
			}
			if c.silent {
				continue // dropped: the connection stays open and silent
			}
			if _, werr := c.down.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
