package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	c, err := loadConfig(map[string]string{})
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if c.GRPCAddr != ":50051" || c.HTTPAddr != ":9092" || c.MaxBodyBytes != 65536 || c.ShutdownTimeout != 10*time.Second ||
		c.MaxHeaderBytes != 65536 || c.ReadHeaderTimeout != 5*time.Second || c.MaxQueued != 10000 || c.MaxEventStreams != 64 ||
		c.MaxOutputBytes != 4<<20 || c.GRPCMaxRecvBytes != 16<<20 || c.LiveOutputBytes != 256<<10 || c.APIToken != "" || c.WorkerToken != "" || c.TLSCert != "" ||
		c.TimerSlack != time.Millisecond {
		t.Fatalf("defaults = %+v", c)
	}
	if _, err := loadConfig(map[string]string{"MASTER_MAX_OUTPUT_BYTES": "1024", "MASTER_GRPC_MAX_RECV_BYTES": "67584",
		"MASTER_API_TOKEN": "0123456789abcdef", "MASTER_WORKER_TOKEN": "fedcba9876543210", "MASTER_READ_HEADER_TIMEOUT": "300ms",
		"MASTER_MAX_EVENT_STREAMS": "1"}); err != nil {
		t.Fatalf("valid limits and tokens: %v", err)
	}
	if _, err := loadConfig(map[string]string{"MASTER_HTTP_ADDR": "127.0.0.1:8080", "LOG_FORMAT": "json", "LOG_LEVEL": "debug", "MASTER_MAX_EVENT_STREAMS": "10000"}); err != nil {
		t.Fatalf("valid values: %v", err)
	}
	if c.Retention != 168*time.Hour {
		t.Errorf("default MASTER_RETENTION = %s, want 168h", c.Retention)
	}
	for _, v := range []string{"0", "1m", "87600h"} {
		if _, err := loadConfig(map[string]string{"MASTER_RETENTION": v}); err != nil {
			t.Errorf("MASTER_RETENTION=%s: %v", v, err)
		}
	}

	// The longest cmd a shell can be given as its argument, and one more.
	big := map[string]string{"MASTER_MAX_BODY_BYTES": "1048576", "MASTER_MAX_CMD_BYTES": "131071"}
	if _, err := loadConfig(big); err != nil {
		t.Errorf("MASTER_MAX_CMD_BYTES=131071: %v", err)
	}
	big["MASTER_MAX_CMD_BYTES"] = "131072"
	if _, err := loadConfig(big); err == nil || !strings.Contains(err.Error(), "MASTER_MAX_CMD_BYTES") {
		t.Errorf("MASTER_MAX_CMD_BYTES=131072 (no shell could be given it): %v, want an error naming it", err)
	}

	tests := []struct {
		name, key, value string
	}{
		{"malformed grpc address", "MASTER_GRPC_ADDR", "50051"},
		{"port out of range", "MASTER_HTTP_ADDR", ":99999"},
		{"body limit not a number", "MASTER_MAX_BODY_BYTES", "lots"},
		{"body limit too small", "MASTER_MAX_BODY_BYTES", "10"},
		{"cmd limit over body limit", "MASTER_MAX_CMD_BYTES", "70000"},
		{"bad duration", "MASTER_SHUTDOWN_TIMEOUT", "soon"},
		{"worker timeout too short", "MASTER_WORKER_TIMEOUT", "10ms"},
		{"task timeout over the max", "MASTER_TASK_TIMEOUT", "48h"},
		{"max attempts zero", "MASTER_MAX_ATTEMPTS", "0"},
		{"max attempts not a number", "MASTER_MAX_ATTEMPTS", "three"},
		{"max wait too long", "MASTER_MAX_WAIT", "1h"},
		{"retention too short", "MASTER_RETENTION", "59s"},
		{"retention too long", "MASTER_RETENTION", "87601h"},
		{"retention negative", "MASTER_RETENTION", "-1h"},
		{"retention not a duration", "MASTER_RETENTION", "7d"},
		{"bad level", "LOG_LEVEL", "loud"},
		{"bad format", "LOG_FORMAT", "xml"},
		{"api token too short", "MASTER_API_TOKEN", "short"},
		{"api token with a space", "MASTER_API_TOKEN", "0123456789 abcdefgh"},
		{"worker token too short", "MASTER_WORKER_TOKEN", "abc"},
		{"header limit too small", "MASTER_MAX_HEADER_BYTES", "100"},
		{"header limit not a number", "MASTER_MAX_HEADER_BYTES", "big"},
		{"read header timeout too short", "MASTER_READ_HEADER_TIMEOUT", "1ms"},
		{"read header timeout too long", "MASTER_READ_HEADER_TIMEOUT", "10m"},
		{"queue limit zero", "MASTER_MAX_QUEUED", "0"},
		{"event stream limit zero", "MASTER_MAX_EVENT_STREAMS", "0"},
		{"event stream limit too large", "MASTER_MAX_EVENT_STREAMS", "10001"},
		{"event stream limit not a number", "MASTER_MAX_EVENT_STREAMS", "many"},
		{"output limit too small", "MASTER_MAX_OUTPUT_BYTES", "10"},
		{"live output too small", "MASTER_LIVE_OUTPUT_BYTES", "1024"},
		{"live output too large", "MASTER_LIVE_OUTPUT_BYTES", "16777217"},
		{"live output not a number", "MASTER_LIVE_OUTPUT_BYTES", "lots"},
		{"output limit over the gRPC limit", "MASTER_MAX_OUTPUT_BYTES", "16777216"},
		{"gRPC limit below twice the output", "MASTER_GRPC_MAX_RECV_BYTES", "8388608"},
		{"gRPC limit too large", "MASTER_GRPC_MAX_RECV_BYTES", "1073741824"},
		{"malformed pprof address", "MASTER_PPROF_ADDR", "6060"},
		{"timer slack negative", "MASTER_TIMER_SLACK", "-1ms"},
		{"timer slack too long", "MASTER_TIMER_SLACK", "11ms"},
		{"timer slack not a duration", "MASTER_TIMER_SLACK", "1000"},
		{"heap floor too small", "MASTER_HEAP_FLOOR_BYTES", "4096"},
		{"heap floor too large", "MASTER_HEAP_FLOOR_BYTES", "1073741825"},
		{"heap floor negative", "MASTER_HEAP_FLOOR_BYTES", "-1"},
		{"heap floor not a number", "MASTER_HEAP_FLOOR_BYTES", "16MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(map[string]string{tt.key: tt.value})
			if err == nil || !strings.Contains(err.Error(), tt.key) {
				t.Fatalf("%s=%q: err = %v, want an error naming %s", tt.key, tt.value, err, tt.key)
			}
		})
	}
}

func TestTokenFiles(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	api, worker := file("api", "0123456789abcdef\n"), file("worker", "  fedcba9876543210\r\n")
	c, err := loadConfig(map[string]string{"MASTER_API_TOKEN_FILE": api, "MASTER_WORKER_TOKEN_FILE": worker})
	if err != nil {
		t.Fatal(err)
	}
	if c.APIToken != "0123456789abcdef" || c.WorkerToken != "fedcba9876543210" {
		t.Fatalf("tokens from files = %q, %q", c.APIToken, c.WorkerToken)
	}
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"both", map[string]string{"MASTER_API_TOKEN": "0123456789abcdef", "MASTER_API_TOKEN_FILE": api}, "MASTER_API_TOKEN and MASTER_API_TOKEN_FILE are both set"},
		{"missing file", map[string]string{"MASTER_WORKER_TOKEN_FILE": filepath.Join(dir, "nope")}, "MASTER_WORKER_TOKEN_FILE: open"},
		{"empty file", map[string]string{"MASTER_API_TOKEN_FILE": file("empty", "\n")}, "MASTER_API_TOKEN_FILE: " + filepath.Join(dir, "empty") + " is empty"},
		{"short token", map[string]string{"MASTER_API_TOKEN_FILE": file("short", "abc\n")}, "MASTER_API_TOKEN: must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := loadConfig(tt.env); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestShutdownTimeoutZeroIsExplained: 0s is refused, and the error said
// "0s is outside 0..10m", a range that reads as if it held 0s.
func TestShutdownTimeoutZeroIsExplained(t *testing.T) {
	_, err := loadConfig(map[string]string{"MASTER_SHUTDOWN_TIMEOUT": "0s"})
	if err == nil || !strings.Contains(err.Error(), "MASTER_SHUTDOWN_TIMEOUT: 0s must be more than 0s and at most 10m") {
		t.Fatalf("MASTER_SHUTDOWN_TIMEOUT=0s: err = %v, want one saying it must be more than 0s and at most 10m", err)
	}
}
