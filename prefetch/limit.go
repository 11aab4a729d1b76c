package prefetch

import (
	"context"
	"sync"
	"time"
)

// rateLimiter spaces byte transfers so that their average rate stays at
// or below a cap: each reservation is scheduled after the previous ones
// at bytes/rate, so concurrent workers share the cap exactly.
type rateLimiter struct {
	rate float64 // bytes per second; 0 means no limit

	mu   sync.Mutex
	next time.Time // GUARDED_BY(mu): when the next reservation may start
}

func newRateLimiter(bytesPerSecond uint64) *rateLimiter {
	return &rateLimiter{rate: float64(bytesPerSecond)}
}

// wait blocks until n more bytes may go, or ctx ends.
func (l *rateLimiter) wait(ctx context.Context, n int64) error {
	if l == nil || l.rate <= 0 || n <= 0 {
		return ctx.Err()
	}
	now := time.Now()
	l.mu.Lock()
	// A burst of up to a quarter second is allowed after an idle spell.
	if floor := now.Add(-250 * time.Millisecond); l.next.Before(floor) {
		l.next = floor
	}
	start := l.next
	l.next = l.next.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	l.mu.Unlock()
	d := start.Sub(now)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// slots is a counting semaphore whose waiters are served highest priority
// first, then first come: a checkpoint restore overtakes background
// warm-up, which still gets every slot nobody else wants.
type slots struct {
	mu      sync.Mutex
	free    int       // GUARDED_BY(mu)
	waiters []*waiter // GUARDED_BY(mu)
	seq     uint64    // GUARDED_BY(mu)
}

type waiter struct {
	prio  int
	seq   uint64
	ready chan struct{}
}

func newSlots(n int) *slots { return &slots{free: n} }

// acquire takes a slot, waiting behind waiters of higher or equal
// priority that came first.
func (s *slots) acquire(ctx context.Context, prio int) error {
	s.mu.Lock()
	if s.free > 0 && len(s.waiters) == 0 {
		s.free--
		s.mu.Unlock()
		return nil
	}
	s.seq++
	w := &waiter{prio: prio, seq: s.seq, ready: make(chan struct{})}
	s.waiters = append(s.waiters, w)
	s.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		defer s.mu.Unlock()
		select {
		case <-w.ready:
			// Granted while giving up: pass it on.
			s.releaseLocked()
		default:
			for i, x := range s.waiters {
				if x == w {
					s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
					break
				}
			}
		}
		return ctx.Err()
	}
}

// release returns a slot.
func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked()
}

func (s *slots) releaseLocked() {
	if len(s.waiters) == 0 {
		s.free++
		return
	}
	best := 0
	for i, w := range s.waiters {
		b := s.waiters[best]
		if w.prio > b.prio || w.prio == b.prio && w.seq < b.seq {
			best = i
		}
	}
	w := s.waiters[best]
	s.waiters = append(s.waiters[:best], s.waiters[best+1:]...)
	close(w.ready)
}
