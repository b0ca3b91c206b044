package dispatch

// queue is a FIFO of task IDs that can also put a task back at the front
// (a re-queued task was accepted before everything behind it). Popped slots
// are cleared and the backing array is compacted once half of it is dead, so
// memory follows the queue's length, not its history.
type queue struct {
	items []string
	head  int // items[head:] are queued
}

func (q *queue) len() int { return len(q.items) - q.head }

func (q *queue) pushBack(id string) { q.items = append(q.items, id) }

func (q *queue) pushFront(id string) {
	if q.head > 0 {
		q.head--
		q.items[q.head] = id
		return
	}
	q.items = append([]string{id}, q.items...)
}

func (q *queue) peek() (string, bool) {
	if q.len() == 0 {
		return "", false
	}
	return q.items[q.head], true
}

func (q *queue) pop() {
	q.items[q.head] = ""
	q.head++
	if q.head > 1024 && q.head*2 > len(q.items) {
		q.items = append([]string(nil), q.items[q.head:]...)
		q.head = 0
	}
}

// keep drops the IDs for which ok is false, and repeats of an ID, keeping
// the order of the rest.
func (q *queue) keep(ok func(id string) bool) {
	seen := make(map[string]bool, q.len())
	kept := make([]string, 0, q.len())
	for _, id := range q.items[q.head:] {
		if !seen[id] && ok(id) {
			seen[id] = true
			kept = append(kept, id)
		}
	}
	q.items, q.head = kept, 0
}
