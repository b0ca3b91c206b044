package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// writeComparison prints issue 14's table in Markdown, ready to paste: the
// old system (-peer), Roundhouse with its ratio, and this machine's limits,
// all medians of the same run. Roundhouse's ratio is to the old system when
// it was measured, otherwise to the machine's limit; a figure that was not
// measured shows as "-".
func (r *Report) writeComparison(w io.Writer) {
	cell := func(name string) string {
		m, ok := r.metric(name)
		if !ok {
			return "-"
		}
		return figure(m.Median)
	}
	// times is Roundhouse's figure with the first ratio that was measured.
	times := func(name string, ratios ...[2]string) string {
		c := cell(name)
		if c == "-" {
			return c
		}
		for _, x := range ratios {
			if v, ok := r.ratioValue(x[0]); ok {
				return fmt.Sprintf("%s (%.2f×%s)", c, v, x[1])
			}
		}
		return c
	}
	// limit is a machine limit after its label.
	limit := func(label, name string) string {
		if c := cell(name); c != "-" {
			return label + c
		}
		return "-"
	}
	pair := func(a, b string) string {
		if ca, cb := cell(a), cell(b); ca != "-" || cb != "-" {
			return ca + " / " + cb
		}
		return "-"
	}
	drops := cell("peer_accepted_rate_c64_noworker")
	if drops != "-" {
		drops += " (drops them)"
	}
	// The durable handler is the ceiling of a submission on disk, the row
	// handler that of one that writes the master's row.
	durable := ""
	if c := cell("durable_rate_c64"); c != "-" {
		durable = "; durable handler " + c
	}
	if c := cell("durable_row_rate_c64"); c != "-" {
		durable += "; with the master's row " + c
	}
	// The floor master (floor.go) is the ceiling of a master that keeps
	// the promise with these workers.
	floor := func(name string) string {
		if c := cell(name); c != "-" {
			return "; floor master " + c
		}
		return ""
	}
	rows := [][]string{
		{"Figure (same run)", "old system", "Roundhouse (ratio)", "machine limit"},
		{"accepted/s at concurrency 64, 5 workers running the tasks",
			cell("peer_accepted_rate_c64_workers"),
			times("submit_rate_c64_workers", [2]string{"accepted_vs_peer_c64", ""}, [2]string{"accepted_workers_vs_minimal_c64", " minimal"}),
			limit("minimal handler ", "minimal_rate_c64") + floor("floor_accepted_rate_c64_workers")},
		{"tasks executed per second, `{\"cmd\":\"true\"}`, 5 workers",
			cell("peer_completed_rate"),
			times("completed_rate", [2]string{"completed_vs_peer", ""}, [2]string{"completed_vs_forkexec", " fork/exec"}),
			limit("`sh -c true` at concurrency 2: ", "forkexec_rate_c2") + floor("floor_completed_rate")},
		{"accepted/s at concurrency 64, no worker connected",
			drops,
			times("submit_rate_c64", [2]string{"accepted_vs_minimal_c64", " minimal"}),
			limit("minimal handler ", "minimal_rate_c64") + durable},
		{"CPU per task, master / worker (ms)",
			pair("peer_cpu_master_ms_per_task", "peer_cpu_workers_ms_per_task"),
			pair("cpu_master_ms_per_task", "cpu_workers_ms_per_task"),
			limit("the command itself: ", "cpu_commands_ms_per_task") + floor("cpu_floor_master_ms_per_task")},
	}
	writeMarkdown(w, rows)
	if f, ok := r.metric("peer_executed_fraction"); ok && f.Min < 1 {
		fmt.Fprintf(w, "The old system ran %.1f%% of the tasks it answered 200 to (worst run %.1f%%).\n", 100*f.Median, 100*f.Min)
	}
	if _, ok := r.metric("peer_completed_rate"); !ok {
		fmt.Fprintln(w, "Old system not measured: make bench PEER=path/to/seed-server (see README, Performance).")
	}
}

// ratioValue is the median of a ratio by name.
func (r *Report) ratioValue(name string) (float64, bool) {
	for _, x := range r.Ratios {
		if x.Name == name {
			return x.Median, true
		}
	}
	return 0, false
}

// writeMarkdown prints rows as a Markdown table, the first row the header,
// every column padded to its widest cell so that it also reads as text.
func writeMarkdown(w io.Writer, rows [][]string) {
	var width []int
	for _, row := range rows {
		for i, c := range row {
			if i == len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range cells {
			b.WriteString(" " + c + strings.Repeat(" ", width[i]-utf8.RuneCountInString(c)) + " |")
		}
		fmt.Fprintln(w, b.String())
	}
	for i, row := range rows {
		line(row)
		if i == 0 {
			rule := make([]string, len(width))
			for j, n := range width {
				rule[j] = strings.Repeat("-", n)
			}
			line(rule)
		}
	}
}

// figure prints a table figure: thousands separated from 1,000 up, whole
// numbers from 100, about three significant digits below.
func figure(v float64) string {
	if math.IsNaN(v) || math.Abs(v) < 100 {
		return num(v)
	}
	s := strconv.FormatFloat(math.Round(math.Abs(v)), 'f', 0, 64)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if v < 0 {
		s = "-" + s
	}
	return s
}
