package dispatch

// fifo is a FIFO of task IDs that can also put a task back at the front
// (a re-queued task was accepted before everything behind it): the tasks of
// one class (priority and requirements) of the queue. It is a ring
// buffer, so that a push at either end costs O(1) however long the queue is:
// the dispatcher pushes under its lock, and a re-queue in front of a million
// waiting tasks must not copy them. The ring doubles when full and halves
// when a quarter full, so memory follows the queue's length, not its history.
//
// An ID whose task stopped waiting without being popped (canceled, or
// finished by a late result) stays in the queue until it reaches the front
// or the queue is compacted: removing it from the middle would cost a scan.
// stale counts such IDs, so that waiting is exact at no cost.
type fifo struct {
	ring  []entry // len(ring) is 0 or a power of two
	head  int     // ring[head] is the front, when n > 0
	n     int     // IDs in the queue, stale ones included
	stale int     // IDs in the queue whose task no longer waits
}

// entry is a task ID in a fifo, with its place in the order of the whole
// queue: a smaller seq was queued earlier (or put back at the front), so
// the heads of two classes of one priority tell which task is older. It
// holds the ID as its key: 24 bytes and no pointer, so a ring of a million
// is one allocation the garbage collector never scans.
type entry struct {
	key taskKey
	seq int64
}

// minRing is the smallest ring kept once there is one: below it, halving
// saves nothing worth the copies.
const minRing = 64

// len is the number of IDs in the queue, stale ones included.
func (q *fifo) len() int { return q.n }

// waiting is the number of tasks that wait in the queue.
func (q *fifo) waiting() int { return q.n - q.stale }

// at returns the index in ring of the i-th ID from the front.
func (q *fifo) at(i int) int { return (q.head + i) & (len(q.ring) - 1) }

func (q *fifo) pushBack(e entry) {
	q.grow()
	q.ring[q.at(q.n)] = e
	q.n++
}

func (q *fifo) pushFront(e entry) {
	q.grow()
	q.head = (q.head - 1) & (len(q.ring) - 1)
	q.ring[q.head] = e
	q.n++
}

func (q *fifo) peek() (entry, bool) {
	if q.n == 0 {
		return entry{}, false
	}
	return q.ring[q.head], true
}

// pop removes the front ID, a waiting task's.
func (q *fifo) pop() {
	q.head = q.at(1)
	q.n--
	q.shrink()
}

// shrink halves the ring once it is a quarter full.
func (q *fifo) shrink() {
	if len(q.ring) > minRing && q.n <= len(q.ring)/4 {
		q.resize(len(q.ring) / 2)
	}
}

// removeAt removes the i-th ID from the front, a waiting task's, and
// returns it: the IDs on the shorter side of it move one place towards
// it, a cost of min(i, len-1-i) (0 for either end).
func (q *fifo) removeAt(i int) entry {
	e := q.ring[q.at(i)]
	if i < q.n/2 {
		for j := i; j > 0; j-- {
			q.ring[q.at(j)] = q.ring[q.at(j-1)]
		}
		q.pop()
		return e
	}
	for j := i; j < q.n-1; j++ {
		q.ring[q.at(j)] = q.ring[q.at(j+1)]
	}
	q.n--
	q.shrink()
	return e
}

// find returns the place from the front of an ID with key k, or -1. It
// looks from both ends at once, so it costs twice the distance of that ID
// from the nearer end: an ID put back at the front, or queued again at the
// back, is found at once however long the queue.
func (q *fifo) find(k taskKey) int {
	for d := 0; d <= (q.n-1)/2; d++ {
		if q.ring[q.at(d)].key == k {
			return d
		}
		if back := q.n - 1 - d; q.ring[q.at(back)].key == k {
			return back
		}
	}
	return -1
}

// popStale removes the front ID, one counted stale by left.
func (q *fifo) popStale() {
	q.pop()
	q.stale--
}

// left records that the task of an ID in the queue stopped waiting without
// being popped.
func (q *fifo) left() { q.stale++ }

func (q *fifo) grow() {
	if q.n == len(q.ring) {
		q.resize(max(2*len(q.ring), minRing))
	}
}

// resize moves the IDs, in order, to a ring of size c (a power of two, at
// least q.n).
func (q *fifo) resize(c int) {
	ring := make([]entry, c)
	if q.n > 0 {
		end := q.head + q.n
		if end <= len(q.ring) {
			copy(ring, q.ring[q.head:end])
		} else {
			k := copy(ring, q.ring[q.head:])
			copy(ring[k:], q.ring[:end-len(q.ring)])
		}
	}
	q.ring, q.head = ring, 0
}

// keep drops the IDs for which ok is false, and repeats of an ID, keeping
// the order of the rest; it costs the queue's length. ok must be false
// exactly for the stale IDs: none is left after it.
func (q *fifo) keep(ok func(k taskKey) bool) {
	seen := make(map[taskKey]bool, q.waiting())
	kept := make([]entry, 0, q.waiting())
	for i := range q.n {
		e := q.ring[q.at(i)]
		if !seen[e.key] && ok(e.key) {
			seen[e.key] = true
			kept = append(kept, e)
		}
	}
	c := minRing
	for c < len(kept) {
		c *= 2
	}
	ring := make([]entry, c)
	copy(ring, kept)
	q.ring, q.head, q.n, q.stale = ring, 0, len(kept), 0
}
