package main

import (
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	c, err := loadConfig(map[string]string{})
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if c.GRPCAddr != ":50051" || c.HTTPAddr != ":9092" || c.MaxBodyBytes != 65536 || c.ShutdownTimeout != 10*time.Second {
		t.Fatalf("defaults = %+v", c)
	}
	if _, err := loadConfig(map[string]string{"MASTER_HTTP_ADDR": "127.0.0.1:8080", "LOG_FORMAT": "json", "LOG_LEVEL": "debug"}); err != nil {
		t.Fatalf("valid values: %v", err)
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
		{"bad level", "LOG_LEVEL", "loud"},
		{"bad format", "LOG_FORMAT", "xml"},
		{"malformed pprof address", "MASTER_PPROF_ADDR", "6060"},
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
