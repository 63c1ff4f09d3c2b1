package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDeploymentFiles: the image and the Kubernetes manifest agree on a
// numeric non-root user (Kubernetes refuses runAsNonRoot with a user name it
// cannot check), base images are pinned, the build context leaves out what
// it must not carry, and the image is stamped with a version from git
// (issue 10, item 19).
func TestDeploymentFiles(t *testing.T) {
	read := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	docker := read("../../Dockerfile")
	k8s := read("../../deploy/kubernetes.yaml")
	if !regexp.MustCompile(`(?m)^USER 65532:65532$`).MatchString(docker) {
		t.Error("Dockerfile: USER must be numeric (65532:65532) so runAsNonRoot can be verified")
	}
	for _, want := range []string{"runAsNonRoot: true", "runAsUser: 65532", "runAsGroup: 65532"} {
		if !strings.Contains(k8s, want) {
			t.Errorf("deploy/kubernetes.yaml lacks %q", want)
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllStringSubmatch(docker, -1) {
		img := m[1]
		if !strings.Contains(img, "@sha256:") && !regexp.MustCompile(`:\d+\.\d+\.\d+`).MatchString(img) {
			t.Errorf("Dockerfile: base image %s is pinned neither by digest nor by an exact version tag", img)
		}
	}
	ignore := read("../../.dockerignore")
	for _, want := range []string{"bin/", "dist/", "*.test", "bench/results/"} {
		if !strings.Contains(ignore, want) {
			t.Errorf(".dockerignore lacks %s", want)
		}
	}
	if strings.Contains(docker, "ARG VERSION=devel") || !strings.Contains(docker, "-buildvcs=true") {
		t.Error("Dockerfile: the version must come from git (go build -buildvcs=true, or a VERSION build argument), never a fixed devel")
	}
}

// TestVersionFromVCS: without -X main.version, a binary built from a git
// checkout names the commit it was built from.
func TestVersionFromVCS(t *testing.T) {
	got := versionFrom("", "(devel)", map[string]string{"vcs.revision": "4487cdab0123456789", "vcs.modified": "true"})
	if got != "modelgate devel+4487cdab0123-dirty" {
		t.Errorf("version = %q", got)
	}
	if got := versionFrom("v1.2.3", "(devel)", nil); got != "modelgate v1.2.3" {
		t.Errorf("version = %q", got)
	}
	if got := versionFrom("", "v0.4.0", map[string]string{"vcs.revision": "abc"}); got != "modelgate v0.4.0" {
		t.Errorf("version = %q", got)
	}
}
