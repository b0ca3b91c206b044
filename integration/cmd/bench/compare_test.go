package main

import (
	"bytes"
	"strings"
	"testing"
)

// fullReport has every figure the closing table shows, three runs each.
func fullReport(withPeer bool) *Report {
	r := &Report{}
	r.add("forkexec_rate_c2", "runs/s", []float64{238, 240, 236}, "")
	r.add("minimal_rate_c64", "req/s", []float64{24242, 24000, 25000}, "")
	r.add("submit_rate_c64", "req/s", []float64{7503, 7500, 7600}, "")
	r.add("cpu_master_ms_per_task", "ms", []float64{0.51, 0.5, 0.52}, "")
	r.add("cpu_workers_ms_per_task", "ms", []float64{0.64, 0.63, 0.66}, "")
	r.add("cpu_commands_ms_per_task", "ms", []float64{0.837, 0.837, 0.86}, "")
	r.add("completed_rate", "tasks/s", []float64{136, 130, 140}, "")
	r.add("submit_rate_c64_workers", "req/s", []float64{1907, 1900, 1950}, "")
	if withPeer { // and the durable and row handlers and the floor master, which any run may show or not
		r.add("durable_rate_c64", "req/s", []float64{12000, 11000, 12500}, "")
		r.add("floor_completed_rate", "tasks/s", []float64{180, 170, 200}, "")
		r.add("floor_accepted_rate_c64_workers", "req/s", []float64{3500, 3400, 3600}, "")
		r.add("cpu_floor_master_ms_per_task", "ms", []float64{0.2, 0.19, 0.21}, "")
		r.add("durable_row_rate_c64", "req/s", []float64{10000, 9000, 10500}, "")
		r.add("peer_accepted_rate_c64_noworker", "req/s", []float64{9397, 9000, 9500}, "")
		r.add("peer_completed_rate", "tasks/s", []float64{192, 190, 200}, "")
		r.add("peer_executed_fraction", "ratio", []float64{1, 0.98, 1}, "")
		r.add("peer_cpu_master_ms_per_task", "ms", []float64{0.05, 0.05, 0.06}, "")
		r.add("peer_cpu_workers_ms_per_task", "ms", []float64{0.2, 0.2, 0.25}, "")
		r.add("peer_accepted_rate_c64_workers", "req/s", []float64{3814, 3800, 3900}, "")
	}
	r.evaluate()
	return r
}

// TestWriteComparison checks issue 14's table cell by cell: ratios to the
// old system when it was measured, to the machine's limits otherwise.
func TestWriteComparison(t *testing.T) {
	for _, withPeer := range []bool{true, false} {
		var b bytes.Buffer
		fullReport(withPeer).writeComparison(&b)
		out := b.String()
		rows := tableRows(out)
		if len(rows) != 6 {
			t.Fatalf("withPeer=%v: %d table rows, want header, rule and 4:\n%s", withPeer, len(rows), out)
		}
		for i, row := range rows {
			if len(row) != 4 {
				t.Errorf("withPeer=%v: row %d has %d cells: %q", withPeer, i, len(row), row)
			}
		}
		if w := len(rows[0]); w == 4 && strings.Join(rows[0], "|") != "Figure (same run)|old system|Roundhouse (ratio)|machine limit" {
			t.Errorf("header = %q", rows[0])
		}
		var want [][]string
		if withPeer {
			want = [][]string{
				{"3,814", "1,907 (0.50×)", "minimal handler 24,242; floor master 3,500"},
				{"192", "136 (0.70×)", "`sh -c true` at concurrency 2: 238; floor master 180"},
				{"9,397 (drops them)", "7,503 (0.31× minimal)", "minimal handler 24,242; durable handler 12,000; with the master's row 10,000"},
				{"0.05 / 0.2", "0.51 / 0.64", "the command itself: 0.837; floor master 0.2"},
			}
		} else {
			want = [][]string{
				{"-", "1,907 (0.08× minimal)", "minimal handler 24,242"},
				{"-", "136 (0.57× fork/exec)", "`sh -c true` at concurrency 2: 238"},
				{"-", "7,503 (0.31× minimal)", "minimal handler 24,242"},
				{"-", "0.51 / 0.64", "the command itself: 0.837"},
			}
		}
		for i, w := range want {
			if got := rows[i+2][1:]; strings.Join(got, "|") != strings.Join(w, "|") {
				t.Errorf("withPeer=%v: row %q = %q, want %q", withPeer, rows[i+2][0], got, w)
			}
		}
		notMeasured := strings.Contains(out, "Old system not measured")
		if notMeasured == withPeer {
			t.Errorf("withPeer=%v: 'not measured' line present = %v:\n%s", withPeer, notMeasured, out)
		}
		if lost := strings.Contains(out, "ran 100.0% of the tasks it answered 200 to (worst run 98.0%)"); lost != withPeer {
			t.Errorf("withPeer=%v: lost-task line present = %v:\n%s", withPeer, lost, out)
		}
	}

	// Nothing measured: every figure is "-", and the table keeps its shape.
	var b bytes.Buffer
	(&Report{}).writeComparison(&b)
	for _, row := range tableRows(b.String())[2:] {
		for _, c := range row[1:] {
			if c != "-" {
				t.Errorf("empty report: row %q has %q", row[0], c)
			}
		}
	}
}

// tableRows splits a Markdown table's lines into trimmed cells.
func tableRows(s string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		var row []string
		for _, c := range strings.Split(strings.Trim(line, "|"), "|") {
			row = append(row, strings.TrimSpace(c))
		}
		rows = append(rows, row)
	}
	return rows
}

// TestWriteMarkdownAligns checks that every line of the table is as wide as
// the others, counting "×" as one character.
func TestWriteMarkdownAligns(t *testing.T) {
	var b bytes.Buffer
	writeMarkdown(&b, [][]string{{"a", "bb"}, {"1.00×", "-"}})
	want := "| a     | bb |\n| ----- | -- |\n| 1.00× | -  |\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestFigure(t *testing.T) {
	tests := []struct {
		v    float64
		want string
	}{
		{24242.4, "24,242"}, {1000, "1,000"}, {999.6, "1,000"}, {192.3, "192"}, {1234567, "1,234,567"},
		{-3819, "-3,819"}, {0.51, "0.51"}, {12.34, "12.3"},
	}
	for _, tt := range tests {
		if got := figure(tt.v); got != tt.want {
			t.Errorf("figure(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}
