package store

// A task's writes often come in quick succession: its delivery, then, a
// few milliseconds later, the result of a short command. When the second
// arrives while the first still waits in the queue (the writer is busy with
// the commit before), there is no need to write the row twice: the later
// write goes into the earlier request, whose caller and the later one are
// both answered when it commits. A short task then costs one UPDATE of its
// row and one of its attempt for both, instead of two of each.
//
// The later write is so committed earlier than its place in the queue, with
// the writes in between; nothing depends on the order of different tasks'
// writes, only on the order of each row's. So a request folds only into the
// last queued request that writes its task, and nothing else in between may
// write that task's rows.

// foldable returns the task a request writes, when later writes may fold
// into it, or it into an earlier one: one Write, an Update of a task row
// (which the store has), and at most one of its attempts.
func foldable(r *request) (string, bool) {
	if r.del != nil || len(r.ws) != 1 {
		return "", false
	}
	w := r.ws[0]
	if w.Task == nil || w.Kind != Update || w.Attempt != nil && w.Attempt.TaskID != w.Task.ID {
		return "", false
	}
	return w.Task.ID, true
}

// foldLocked folds r into the queued request that last wrote r's task, if
// it can, and reports whether it did. Otherwise r will be queued, and it
// becomes the request later writes of its task fold into, or, if it is not
// foldable, it keeps them from folding into a request ahead of it. s.mu must
// be held.
func (s *Store) foldLocked(r *request) bool {
	id, ok := foldable(r)
	if ok {
		if p := s.folds[id]; p != nil {
			if w, ok := merge(p.ws[0], r.ws[0]); ok {
				p.ws[0] = w
				p.also = append(p.also, r.done)
				s.folded.Add(1)
				return true
			}
		}
	}
	if r.del != nil {
		clear(s.folds) // it deletes rows it chooses itself
	}
	for _, w := range r.ws {
		if w.Task != nil {
			delete(s.folds, w.Task.ID)
		}
		if w.Attempt != nil {
			delete(s.folds, w.Attempt.TaskID)
		}
	}
	if ok {
		s.folds[id] = r
	}
	return false
}

// merge returns the one Write that leaves the rows as older then newer
// would, both foldable writes of the same task, or false when it takes two:
// they write different attempts.
func merge(older, newer Write) (Write, bool) {
	a, ak := older.Attempt, older.AttemptKind
	switch {
	case newer.Attempt == nil:
	case a == nil:
		a, ak = newer.Attempt, newer.AttemptKind
	case a.N == newer.Attempt.N:
		a = newer.Attempt
		if ak != Insert { // an Insert's row may not be stored yet
			ak = newer.AttemptKind
		}
	default:
		return Write{}, false
	}
	return Write{Task: newer.Task, Kind: Update, Attempt: a, AttemptKind: ak}, true
}
