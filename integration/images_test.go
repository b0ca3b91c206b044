package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestImagesFastMatchesClean builds both images twice with docker/images.sh,
// under tags of its own: the fast way (binaries from the host's Go, images
// from the runtime stage taken out of each Dockerfile) and CLEAN=1 (the
// Dockerfiles as a connected machine builds them). The two must be the same
// image to a user: config (user, entrypoint, healthcheck, env, ports,
// volumes, working directory, labels), files with their owners and modes,
// and binaries built with the same settings and module versions, byte for
// byte when the Go versions match. A second fast build of unchanged sources
// must keep both image IDs, or `make up` would restart every container.
//
// The builds are given one VERSION: otherwise each takes the last commit
// that touched its module, and a commit made while the test runs would
// change the version label and -X main.version between them.
func TestImagesFastMatchesClean(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	suffix := fmt.Sprintf("images-test-%d", time.Now().UnixNano())
	tag := func(module, way string) string { return "roundhouse/" + module + ":" + suffix + "-" + way }
	modules := []string{"master", "worker"}
	for _, m := range modules {
		for _, way := range []string{"fast", "clean"} {
			ref := tag(m, way)
			t.Cleanup(func() { _ = exec.Command("docker", "image", "rm", ref).Run() })
		}
	}

	out := buildImages(t, ctx, tag("master", "fast"), tag("worker", "fast"), "")
	if !strings.Contains(out, "(host go") {
		t.Fatalf("docker/images.sh did not take the fast path (host Go of the Dockerfiles' version):\n%s", out)
	}
	fastIDs := map[string]string{}
	for _, m := range modules {
		fastIDs[m] = inspectImage(t, ctx, tag(m, "fast")).ID
	}
	buildImages(t, ctx, tag("master", "fast"), tag("worker", "fast"), "")
	for _, m := range modules {
		if id := inspectImage(t, ctx, tag(m, "fast")).ID; id != fastIDs[m] {
			t.Errorf("%s: a second fast build of the same sources made a new image (%s, was %s)", m, id, fastIDs[m])
		}
	}

	buildImages(t, ctx, tag("master", "clean"), tag("worker", "clean"), "1")
	for _, m := range modules {
		t.Run(m, func(t *testing.T) {
			fast, clean := inspectImage(t, ctx, tag(m, "fast")), inspectImage(t, ctx, tag(m, "clean"))
			if !reflect.DeepEqual(fast.Config, clean.Config) {
				t.Errorf("config differs:\nfast:  %+v\nclean: %+v", fast.Config, clean.Config)
			}
			if fast.Os != clean.Os || fast.Architecture != clean.Architecture {
				t.Errorf("platform: fast %s/%s, clean %s/%s", fast.Os, fast.Architecture, clean.Os, clean.Architecture)
			}
			fastFiles, fastBin := exportImage(t, ctx, tag(m, "fast"), m)
			cleanFiles, cleanBin := exportImage(t, ctx, tag(m, "clean"), m)
			if !reflect.DeepEqual(fastFiles, cleanFiles) {
				t.Errorf("files differ:\nfast:  %v\nclean: %v", fastFiles, cleanFiles)
			}
			fastInfo, cleanInfo := buildInfo(t, ctx, fastBin), buildInfo(t, ctx, cleanBin)
			if fastInfo != cleanInfo {
				t.Errorf("binary build info differs:\nfast:\n%s\nclean:\n%s", fastInfo, cleanInfo)
			} else if fastBin.sum != cleanBin.sum {
				t.Errorf("same Go, settings and modules, yet the binaries differ (%x, %x)", fastBin.sum, cleanBin.sum)
			}
		})
	}
}

// buildImages runs docker/images.sh for the two tags, CLEAN set as given,
// and returns what it printed.
func buildImages(t *testing.T, ctx context.Context, master, worker, clean string) string {
	t.Helper()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "bash", "docker/images.sh")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "MASTER_IMAGE="+master, "WORKER_IMAGE="+worker, "CLEAN="+clean, "NO_CACHE=",
		"VERSION=images-test")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("CLEAN=%q docker/images.sh: %v\n%s", clean, err, out)
	}
	t.Logf("CLEAN=%q docker/images.sh took %s", clean, time.Since(start).Round(time.Second))
	return string(out)
}

// imageConfig is what a user of the image sees of it, from docker image inspect.
type imageConfig struct {
	ID           string `json:"Id"`
	Os           string
	Architecture string
	Config       struct {
		User         string
		Entrypoint   []string
		Cmd          []string
		Env          []string
		ExposedPorts map[string]struct{}
		Volumes      map[string]struct{}
		WorkingDir   string
		Labels       map[string]string
		Healthcheck  *struct {
			Test                                    []string
			Interval, Timeout, StartPeriod, Retries int64
		}
	}
}

func inspectImage(t *testing.T, ctx context.Context, ref string) imageConfig {
	t.Helper()
	out, err := exec.CommandContext(ctx, "docker", "image", "inspect", ref).Output()
	if err != nil {
		t.Fatalf("docker image inspect %s: %v", ref, err)
	}
	var imgs []imageConfig
	if err := json.Unmarshal(out, &imgs); err != nil || len(imgs) != 1 {
		t.Fatalf("docker image inspect %s: %v (%d images)", ref, err, len(imgs))
	}
	return imgs[0]
}

// binary is a module's binary taken out of an image.
type binary struct {
	path string
	sum  [sha256.Size]byte
}

// exportImage lists every file of a container made from ref (name, type,
// mode, owner, link target; not contents or times) and writes the binary
// /MODULE to a temporary file.
func exportImage(t *testing.T, ctx context.Context, ref, module string) ([]string, binary) {
	t.Helper()
	id, err := exec.CommandContext(ctx, "docker", "create", ref).Output()
	if err != nil {
		t.Fatalf("docker create %s: %v", ref, err)
	}
	container := strings.TrimSpace(string(id))
	t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", container).Run() })
	cmd := exec.CommandContext(ctx, "docker", "export", container)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("docker export %s: %v", ref, err)
	}
	var files []string
	bin := binary{path: filepath.Join(t.TempDir(), module)}
	tr := tar.NewReader(stdout)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("docker export %s: %v", ref, err)
		}
		files = append(files, fmt.Sprintf("%s %c %o %d:%d %s", h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Linkname))
		if h.Name == module {
			var buf bytes.Buffer
			if _, err := io.Copy(&buf, tr); err != nil {
				t.Fatal(err)
			}
			bin.sum = sha256.Sum256(buf.Bytes())
			if err := os.WriteFile(bin.path, buf.Bytes(), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("docker export %s: %v", ref, err)
	}
	if bin.sum == [sha256.Size]byte{} {
		t.Fatalf("%s has no /%s", ref, module)
	}
	return files, bin
}

// buildInfo is `go version -m` of the binary without its path: the Go
// version, the module versions and the build settings (ldflags, CGO_ENABLED,
// -trimpath, GOOS/GOARCH) it was built with.
func buildInfo(t *testing.T, ctx context.Context, b binary) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "go", "version", "-m", b.path).Output()
	if err != nil {
		t.Fatalf("go version -m %s: %v", b.path, err)
	}
	return strings.TrimPrefix(string(out), b.path+":")
}

// `images.sh prune` (make clean) removes the untagged images that
// docker/.build/replaced lists. A fast build, the default, keeps no build
// stage (*.stage): prune must not stop at their absence, or make clean,
// which ignores its failure, deletes the list and leaves the images behind
// for good. The script runs in a directory of its own, against a docker
// that records its calls.
func TestImagesPruneWithoutBuildStages(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "docker", ".build"), 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile("../docker/images.sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "docker", "images.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "docker", ".build", "replaced"), []byte("sha256:0ld\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(dir, "docker-calls")
	path := fakeDocker(t, `echo "$*" >>"`+record+`"
case "$1 $2" in
"image inspect") echo 0 ;; # untagged
esac
`)
	cmd := exec.Command("bash", "docker/images.sh", "prune")
	cmd.Dir, cmd.Env = dir, []string{path, "HOME=" + dir}
	out, err := cmd.CombinedOutput()
	calls, _ := os.ReadFile(record)
	if err != nil || !strings.Contains(string(calls), "image rm sha256:0ld") {
		t.Errorf("images.sh prune: %v\n%s\ndocker calls:\n%s\nwant it to remove sha256:0ld", err, out, calls)
	}
	if _, err := os.Stat(filepath.Join(dir, "docker", ".build", "replaced")); !os.IsNotExist(err) {
		t.Errorf("docker/.build/replaced is still there after its image went (stat: %v)", err)
	}
}
