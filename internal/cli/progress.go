package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"golang.org/x/sys/unix"

	"github.com/blobfs/blobfs/internal/control"
)

// progressBar shows a prefetch's progress on stderr: a live one-line bar
// on a terminal (bytes, files, rate, ETA), plain lines every interval
// otherwise (logs of init containers and node jobs). A nil bar shows
// nothing.
type progressBar struct {
	w        io.Writer
	tty      bool
	width    int
	every    time.Duration
	last     time.Time // when the last line or frame was drawn
	drawn    bool      // a bar is on screen (tty)
	rate     float64   // smoothed fetch rate, bytes per second
	prevAt   time.Time
	prevDone int64
}

// newProgressBar returns a bar drawing on w.
func newProgressBar(w io.Writer, every time.Duration) *progressBar {
	b := &progressBar{w: w, every: every, width: 80}
	if f, ok := w.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			b.tty = true
			if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 20 {
				b.width = int(ws.Col)
			}
		}
	}
	return b
}

// update takes new counters and redraws when it is time.
func (b *progressBar) update(p control.Progress) {
	if b == nil {
		return
	}
	now := time.Now()
	fetched := p.DoneBytes - p.CachedBytes
	if !b.prevAt.IsZero() {
		if dt := now.Sub(b.prevAt).Seconds(); dt > 0.2 {
			inst := float64(fetched-b.prevDone) / dt
			if b.rate == 0 {
				b.rate = inst
			} else {
				b.rate = 0.7*b.rate + 0.3*inst
			}
			b.prevAt, b.prevDone = now, fetched
		}
	} else {
		b.prevAt, b.prevDone = now, fetched
	}
	switch {
	case b.tty:
		if now.Sub(b.last) < 100*time.Millisecond {
			return
		}
		fmt.Fprintf(b.w, "\r%s\x1b[K", b.line(p, true))
		b.drawn = true
	default:
		if !b.last.IsZero() && now.Sub(b.last) < b.every {
			return
		}
		if b.last.IsZero() {
			b.last = now // the first line after one interval, not at once
			return
		}
		fmt.Fprintf(b.w, "prefetch: %s\n", b.line(p, false))
	}
	b.last = now
}

// clear removes the bar so that a line can be printed.
func (b *progressBar) clear() {
	if b != nil && b.tty && b.drawn {
		fmt.Fprint(b.w, "\r\x1b[K")
		b.drawn = false
		b.last = time.Time{}
	}
}

// finish draws the final state and leaves the terminal line clean.
func (b *progressBar) finish(p *control.Progress) {
	if b == nil {
		return
	}
	if b.tty && p != nil && b.drawn {
		fmt.Fprintf(b.w, "\r%s\x1b[K\n", b.line(*p, true))
		b.drawn = false
	}
}

// line renders the counters: a bar (tty), percent, bytes, files, rate,
// ETA.
func (b *progressBar) line(p control.Progress, bar bool) string {
	frac := 1.0
	if p.TotalBytes > 0 {
		frac = float64(p.DoneBytes) / float64(p.TotalBytes)
	}
	eta := "--"
	if left := p.TotalBytes - p.DoneBytes; left <= 0 {
		eta = "0s"
	} else if b.rate > 0 {
		eta = time.Duration(float64(left) / b.rate * float64(time.Second)).Round(time.Second).String()
	}
	text := fmt.Sprintf("%5.1f%%  %s / %s  %d/%d files  %s/s  ETA %s",
		100*frac, humanize.IBytes(uint64(p.DoneBytes)), humanize.IBytes(uint64(p.TotalBytes)),
		p.DoneFiles, p.TotalFiles, humanize.IBytes(uint64(b.rate)), eta)
	if p.FailedFiles > 0 {
		text += fmt.Sprintf("  %d failed", p.FailedFiles)
	}
	if !bar {
		return text
	}
	n := b.width - len(text) - 4
	if n < 10 {
		return text
	}
	n = min(n, 40)
	full := int(frac * float64(n))
	return "[" + strings.Repeat("█", full) + strings.Repeat("░", n-full) + "]  " + text
}
