package httpapi

import "testing"

// A follower that had every byte live gets nothing twice at the end, even
// when the output holds a byte that is not UTF-8: the stored output has it
// as U+FFFD (3 bytes), so its byte offsets are not the live stream's.
func TestFollowOutputInvalidUTF8NotSentTwice(t *testing.T) {
	w := newWithLive(t, 1<<16)
	s, a := w.start(t, "w1", "echo")
	ch := follow(t, w.srv.URL, a.ID)
	expect(t, ch, "attempt", map[string]any{"attempt": 1.0})
	w.live.Append(line(a, "w1", 0, "\xffAB\n"))
	expect(t, ch, "output", map[string]any{"offset": 0.0, "text": "\uFFFDAB\n"})
	w.report(t, s, a, "\xffAB\n") // the whole output came live
	expect(t, ch, "end", map[string]any{"status": "succeeded"})
	expectClosed(t, ch)
}

// The other way: invalid bytes that the stored output folds into one
// U+FFFD make it shorter than the live stream, and the end must not skip
// the bytes that did not come live.
func TestFollowOutputInvalidUTF8NothingMissed(t *testing.T) {
	w := newWithLive(t, 1<<16)
	s, a := w.start(t, "w1", "echo")
	ch := follow(t, w.srv.URL, a.ID)
	expect(t, ch, "attempt", map[string]any{"attempt": 1.0})
	w.live.Append(line(a, "w1", 0, "\xff\xfe\xfd\xfc"))
	expect(t, ch, "output", map[string]any{"offset": 0.0, "text": "\uFFFD"})
	w.report(t, s, a, "\xff\xfe\xfd\xfcXY\n") // "XY\n" never came live
	expect(t, ch, "output", map[string]any{"text": "XY\n"})
	expect(t, ch, "end", map[string]any{"status": "succeeded"})
	expectClosed(t, ch)
}

// Two invalid bytes in a row, one at the end of a chunk and one at the
// start of the next: live, each chunk shows its own U+FFFD, but the stored
// output folds the run into one. The follower must still end with the
// whole stored output: "CD\n", which never came live, must be sent.
func TestFollowOutputInvalidRunSplitAcrossChunksNothingMissed(t *testing.T) {
	w := newWithLive(t, 1<<16)
	s, a := w.start(t, "w1", "echo")
	ch := follow(t, w.srv.URL, a.ID)
	expect(t, ch, "attempt", map[string]any{"attempt": 1.0})
	w.live.Append(line(a, "w1", 0, "A\xff"))
	expect(t, ch, "output", map[string]any{"offset": 0.0, "text": "A\uFFFD"})
	w.live.Append(line(a, "w1", 2, "\xffB"))
	expect(t, ch, "output", map[string]any{"offset": 2.0, "text": "\uFFFDB"})
	w.report(t, s, a, "A\xff\xffBCD\n") // "CD\n" never came live
	expect(t, ch, "output", map[string]any{"text": "CD\n"})
	expect(t, ch, "end", map[string]any{"status": "succeeded"})
	expectClosed(t, ch)
}
