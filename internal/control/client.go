package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// ErrNoAnswer is returned when the stream ends without a final event
// (the mount went away).
var ErrNoAnswer = errors.New("control: the mount closed the channel without an answer")

// cancelGrace is how long Do waits for the server to acknowledge a cancel
// before it hangs up.
const cancelGrace = 10 * time.Second

// Do sends req over conn, calls onEvent for every progress event and
// returns the final event. When ctx ends it asks the server to stop,
// waits for its final event (normally CodeCanceled, after the fetches in
// flight have landed) and returns it with ctx's error. Do closes conn.
func Do(ctx context.Context, conn io.ReadWriteCloser, req Request, onEvent func(Event)) (Event, error) {
	defer conn.Close()
	b, err := json.Marshal(req)
	if err != nil {
		return Event{}, err
	}
	if err := checkRequestSize(len(b) + 1); err != nil {
		return Event{}, err
	}
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return Event{}, fmt.Errorf("control: sending the request: %w", err)
	}
	type result struct {
		e   Event
		err error
	}
	events := make(chan result, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(conn)
		sc.Buffer(make([]byte, 64<<10), 256<<20)
		for sc.Scan() {
			var e Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				events <- result{err: fmt.Errorf("control: bad answer: %w", err)}
				return
			}
			events <- result{e: e}
			if e.Final() {
				return
			}
		}
		err := sc.Err()
		if err == nil {
			err = ErrNoAnswer
		}
		events <- result{err: err}
	}()
	done := ctx.Done()
	var grace <-chan time.Time
	for {
		select {
		case r, ok := <-events:
			if !ok {
				return Event{}, ErrNoAnswer
			}
			if r.err != nil {
				if ctx.Err() != nil {
					return Event{}, ctx.Err()
				}
				return Event{}, r.err
			}
			if r.e.Final() {
				return r.e, ctx.Err()
			}
			if onEvent != nil {
				onEvent(r.e)
			}
		case <-done:
			done = nil
			_, _ = conn.Write([]byte("cancel\n"))
			grace = time.After(cancelGrace)
		case <-grace:
			return Event{}, ctx.Err()
		}
	}
}

// DialSocket connects to a mount's control socket.
func DialSocket(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return c, nil
}

// checkRequestSize refuses a request line of n bytes (newline included)
// that the server would refuse, before any of it is sent.
func checkRequestSize(n int) error {
	if n > MaxRequestBytes {
		return fmt.Errorf("%w: the request is %d bytes, more than the %d one request may be: name directories or globs rather than every file",
			ErrBadRequest, n, MaxRequestBytes)
	}
	return nil
}
