package liveout

// maxHoles bounds the gaps a ring remembers. Each gap costs a few words, and
// a worker that drops a byte here and there could make many: past the
// bound, the ring gives up the data before its oldest gap, so a reader is
// told of one larger skip instead.
const maxHoles = 64

// hole is a run of offsets [from, to) whose bytes never arrived.
type hole struct{ from, to int64 }

// ring keeps the last max bytes of one stream of one delivery, by absolute
// offset in that stream. Offsets in [start, end) are held, except those in
// holes; a reader at an offset below start is told how much it missed.
//
// The buffer grows as output arrives, up to max, so a task that prints a
// line costs a few KiB rather than max bytes; a full ring overwrites its
// oldest bytes. A gap occupies ring space like data would (its bytes are
// never read), which keeps the offset of a byte a plain modulus.
type ring struct {
	max   int
	buf   []byte // len(buf) <= max; the byte at offset o is buf[(head+o-start)%len(buf)]
	head  int    // index in buf of the byte at start
	start int64  // oldest offset held
	end   int64  // next offset to be written
	holes []hole // oldest first, each within [start, end)
}

func newRing(max int) *ring { return &ring{max: max} }

// write stores p at offset off. Bytes before end were had already (a
// resend) and are ignored; a jump past end leaves a gap. It returns the
// bytes taken.
func (r *ring) write(off int64, p []byte) int {
	if off+int64(len(p)) <= r.end {
		return 0
	}
	if off < r.end {
		p = p[r.end-off:]
		off = r.end
	}
	if off > r.end {
		r.addHole(r.end, off)
		r.advance(off)
	}
	taken := len(p)
	if len(p) > r.max { // only the last max bytes can be kept
		r.advance(off + int64(len(p)-r.max))
		p = p[len(p)-r.max:]
	}
	r.grow(len(p))
	at := r.end
	r.advance(r.end + int64(len(p)))
	for len(p) > 0 {
		i := r.index(at)
		n := copy(r.buf[i:], p)
		p = p[n:]
		at += int64(n)
	}
	return taken
}

// advance moves end to to, dropping the oldest bytes beyond max.
func (r *ring) advance(to int64) {
	r.end = to
	if r.end-r.start > int64(r.max) {
		r.dropTo(r.end - int64(r.max))
	}
}

// dropTo forgets the bytes before offset o.
func (r *ring) dropTo(o int64) {
	if o <= r.start {
		return
	}
	if len(r.buf) > 0 {
		r.head = int((int64(r.head) + o - r.start) % int64(len(r.buf)))
	}
	r.start = o
	if r.start >= r.end {
		r.start, r.head = r.end, 0
	}
	for len(r.holes) > 0 && r.holes[0].to <= r.start {
		r.holes = r.holes[1:]
	}
	if len(r.holes) > 0 && r.holes[0].from < r.start {
		r.holes[0].from = r.start
	}
}

func (r *ring) addHole(from, to int64) {
	if len(r.holes) == maxHoles {
		r.dropTo(r.holes[0].to)
	}
	if n := len(r.holes); n > 0 && r.holes[n-1].to == from {
		r.holes[n-1].to = to
		return
	}
	r.holes = append(r.holes, hole{from, to})
}

// grow makes room for n more bytes: the buffer grows, up to max, before
// the ring wraps over its oldest bytes.
func (r *ring) grow(n int) {
	need := int(r.end-r.start) + n
	if need <= len(r.buf) || len(r.buf) == r.max {
		return
	}
	size := min(r.max, max(need, 2*len(r.buf), 4096))
	nb := make([]byte, size)
	held := int(r.end - r.start)
	for i := 0; i < held && len(r.buf) > 0; {
		j := r.index(r.start + int64(i))
		i += copy(nb[i:held], r.buf[j:])
	}
	r.buf, r.head = nb, 0
}

func (r *ring) index(o int64) int {
	return int((int64(r.head) + o - r.start) % int64(len(r.buf)))
}

// read returns what a reader at offset pos gets next: skipped bytes it will
// not get (dropped, or never arrived), then up to limit bytes of data from
// pos+skipped. Data stops before the next gap, so that each call returns
// at most one run.
func (r *ring) read(pos int64, limit int) (skipped int64, data []byte) {
	if pos < r.start {
		skipped, pos = r.start-pos, r.start
	}
	for _, h := range r.holes {
		if pos >= h.from && pos < h.to {
			skipped += h.to - pos
			pos = h.to
		}
	}
	stop := r.end
	for _, h := range r.holes {
		if h.from >= pos {
			stop = min(stop, h.from)
			break
		}
	}
	n := int(min(stop-pos, int64(limit)))
	if n <= 0 {
		return skipped, nil
	}
	data = make([]byte, n)
	for i := 0; i < n; {
		j := r.index(pos + int64(i))
		i += copy(data[i:], r.buf[j:])
	}
	return skipped, data
}
