package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadConfigDefaults(t *testing.T) {
	c, err := loadConfig(map[string]string{})
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	want := config{
		MasterAddr:     "localhost:50051",
		Slots:          1,
		MaxOutputBytes: 1048576,
		ReconnectMax:   5 * time.Second,
		DrainTimeout:   30 * time.Second,
		TimerSlack:     5 * time.Millisecond,
		LogLevel:       "info",
		LogFormat:      "text",
		labels:         map[string]string{},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("defaults = %+v, want %+v", c, want)
	}
}

func TestLoadConfigValid(t *testing.T) {
	c, err := loadConfig(map[string]string{
		"WORKER_MASTER_ADDR":      "master:7000",
		"WORKER_ID":               "roundhouse_worker-3.a",
		"WORKER_SLOTS":            "256",
		"WORKER_MAX_OUTPUT_BYTES": "1",
		"WORKER_HEALTH_ADDR":      ":8081",
		"WORKER_METRICS_ADDR":     "127.0.0.1:9100",
		"WORKER_RECONNECT_MAX":    "100ms",
		"WORKER_DRAIN_TIMEOUT":    "0s",
		"WORKER_TIMER_SLACK":      "0s",
		"WORKER_LABELS":           " gpu=nvidia, zone=eu,example.com/size=large",
		"LOG_LEVEL":               "debug",
		"LOG_FORMAT":              "json",
	})
	if err != nil {
		t.Fatalf("valid values: %v", err)
	}
	if c.MasterAddr != "master:7000" || c.WorkerID != "roundhouse_worker-3.a" || c.Slots != 256 || c.MaxOutputBytes != 1 ||
		c.HealthAddr != ":8081" || c.MetricsAddr != "127.0.0.1:9100" || c.ReconnectMax != 100*time.Millisecond || c.DrainTimeout != 0 || c.TimerSlack != 0 || c.LogLevel != "debug" || c.LogFormat != "json" {
		t.Fatalf("parsed %+v", c)
	}
	if want := map[string]string{"gpu": "nvidia", "zone": "eu", "example.com/size": "large"}; !reflect.DeepEqual(c.labels, want) {
		t.Fatalf("WORKER_LABELS parsed to %v, want %v", c.labels, want)
	}
}

func TestLoadConfigErrorsNameTheVariable(t *testing.T) {
	tests := []struct {
		name, key, value string
		want             string // a part of the message besides the variable
	}{
		{"slots not a number", "WORKER_SLOTS", "abc", `"abc" is not a valid int`},
		{"no slots", "WORKER_SLOTS", "0", "outside 1..256"},
		{"too many slots", "WORKER_SLOTS", "257", "outside 1..256"},
		{"master address without port", "WORKER_MASTER_ADDR", "nohost", `"nohost" is not host:port`},
		{"master address without host", "WORKER_MASTER_ADDR", ":50051", "not host:port"},
		{"master port out of range", "WORKER_MASTER_ADDR", "master:70000", "not host:port"},
		{"master port zero", "WORKER_MASTER_ADDR", "master:0", "not host:port"},
		{"master port not numeric", "WORKER_MASTER_ADDR", "master:grpc", "not host:port"},
		{"worker ID with a space", "WORKER_ID", "a b", "is not 1-64 characters"},
		{"worker ID too long", "WORKER_ID", strings.Repeat("w", 65), "is not 1-64 characters"},
		{"output limit not a number", "WORKER_MAX_OUTPUT_BYTES", "1MB", "not a valid int"},
		{"output limit zero", "WORKER_MAX_OUTPUT_BYTES", "0", "outside 1..4194304"},
		{"output limit too big", "WORKER_MAX_OUTPUT_BYTES", "4194305", "outside 1..4194304"},
		{"health address malformed", "WORKER_HEALTH_ADDR", "8081", "not [host]:port"},
		{"metrics address malformed", "WORKER_METRICS_ADDR", "9100", "not [host]:port"},
		{"reconnect not a duration", "WORKER_RECONNECT_MAX", "soon", `"soon" is not a valid duration`},
		{"reconnect too short", "WORKER_RECONNECT_MAX", "10ms", "outside 100ms..5m"},
		{"reconnect too long", "WORKER_RECONNECT_MAX", "6m", "outside 100ms..5m"},
		{"drain timeout not a duration", "WORKER_DRAIN_TIMEOUT", "30", `"30" is not a valid duration`},
		{"drain timeout negative", "WORKER_DRAIN_TIMEOUT", "-1s", "outside 0s..1h"},
		{"drain timeout too long", "WORKER_DRAIN_TIMEOUT", "61m", "outside 0s..1h"},
		{"timer slack negative", "WORKER_TIMER_SLACK", "-1ms", "outside 0s..10ms"},
		{"timer slack too long", "WORKER_TIMER_SLACK", "11ms", "outside 0s..10ms"},
		{"timer slack not a duration", "WORKER_TIMER_SLACK", "1000", `"1000" is not a valid duration`},
		{"bad level", "LOG_LEVEL", "loud", "not one of"},
		{"bad format", "LOG_FORMAT", "xml", "not text or json"},
		{"token too short", "WORKER_TOKEN", "short", "printable ASCII"},
		{"token with a space", "WORKER_TOKEN", "0123456789 abcdefgh", "printable ASCII"},
		{"label without a value", "WORKER_LABELS", "gpu", `label "gpu" is not key=value`},
		{"label with an empty value", "WORKER_LABELS", "gpu=", "the value must be 1-63 characters"},
		{"label key given twice", "WORKER_LABELS", "zone=eu,zone=us", `label key "zone" is given twice`},
		{"label value with a space", "WORKER_LABELS", "size=very large", "values are made of"},
		{"labels separated by semicolons", "WORKER_LABELS", "gpu=nvidia;zone=eu", "values are made of"},
		{"trailing comma", "WORKER_LABELS", "gpu=nvidia,", `label "" is not key=value`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(map[string]string{tt.key: tt.value})
			if err == nil {
				t.Fatalf("%s=%q accepted", tt.key, tt.value)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, tt.key+": ") || !strings.Contains(msg, tt.want) {
				t.Fatalf("%s=%q: error %q, want %q naming %s", tt.key, tt.value, msg, tt.want, tt.key)
			}
		})
	}
}

// fakeResolver answers reverse lookups from a table.
type fakeResolver map[string][]string

func (f fakeResolver) LookupAddr(_ context.Context, addr string) ([]string, error) {
	if names, ok := f[addr]; ok {
		return names, nil
	}
	return nil, errors.New("no such host")
}

func TestDeriveWorkerID(t *testing.T) {
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("fe80::1"), net.ParseIP("172.18.0.5"), net.ParseIP("10.0.0.7")}
	hostname := func() (string, error) { return "3f2a9c1b7d4e", nil }
	tests := []struct {
		name       string
		resolver   fakeResolver
		hostname   func() (string, error)
		want       string
		wantSource string
		wantErr    bool
	}{
		{
			name:       "compose v2 name",
			resolver:   fakeResolver{"172.18.0.5": {"roundhouse-worker-3.roundhouse_default."}},
			want:       "roundhouse-worker-3",
			wantSource: "reverse DNS of 172.18.0.5",
		},
		{
			name:       "compose v1 name",
			resolver:   fakeResolver{"172.18.0.5": {"roundhouse_worker_3.roundhouse_default."}},
			want:       "roundhouse_worker_3",
			wantSource: "reverse DNS of 172.18.0.5",
		},
		{
			name:       "first address without a name is skipped",
			resolver:   fakeResolver{"10.0.0.7": {"w7.lan."}},
			want:       "w7",
			wantSource: "reverse DNS of 10.0.0.7",
		},
		{
			name:       "loopback names are ignored",
			resolver:   fakeResolver{"127.0.0.1": {"localhost."}, "::1": {"localhost."}},
			want:       "3f2a9c1b7d4e",
			wantSource: "hostname",
		},
		{
			name:       "a name that is an IP falls back to the hostname",
			resolver:   fakeResolver{"172.18.0.5": {"172.18.0.5."}},
			want:       "3f2a9c1b7d4e",
			wantSource: "hostname",
		},
		{
			name:       "no names",
			resolver:   fakeResolver{},
			want:       "3f2a9c1b7d4e",
			wantSource: "hostname",
		},
		{
			name:     "hostname unknown",
			resolver: fakeResolver{},
			hostname: func() (string, error) { return "", errors.New("boom") },
			wantErr:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.hostname
			if h == nil {
				h = hostname
			}
			id, source, err := deriveWorkerID(context.Background(), tt.resolver, ips, h)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if id != tt.want || source != tt.wantSource {
				t.Fatalf("got %q from %q, want %q from %q", id, source, tt.want, tt.wantSource)
			}
		})
	}
}

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "token")
	if err := os.WriteFile(p, []byte("fedcba9876543210\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(map[string]string{"WORKER_TOKEN_FILE": p})
	if err != nil || c.Token != "fedcba9876543210" {
		t.Fatalf("token from file = %q, %v", c.Token, err)
	}
	for name, env := range map[string]map[string]string{
		"WORKER_TOKEN and WORKER_TOKEN_FILE are both set": {"WORKER_TOKEN": "fedcba9876543210", "WORKER_TOKEN_FILE": p},
		"WORKER_TOKEN_FILE: open":                         {"WORKER_TOKEN_FILE": filepath.Join(dir, "nope")},
	} {
		if _, err := loadConfig(env); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%v: err = %v, want %q", env, err, name)
		}
	}
}
