package image

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"path/filepath"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestBuild checks the image the way the Dockerfile's is meant to be: one
// static binary, user 65532, no shell, reproducible.
func TestBuild(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "pause")
	if err := GoBuild(context.Background(), "../..", "./images/pause", bin, "-s -w"); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Ref: "localhost/test:1", Binary: bin, Path: "secctx", Cmd: []string{"serve"}, User: "65532:65532"}
	out := filepath.Join(dir, "img.tar")
	digest, err := Build(spec, out)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Build(spec, filepath.Join(dir, "img2.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if digest != again {
		t.Errorf("two builds of one binary differ: %s, %s", digest, again)
	}

	tag, _ := name.NewTag(spec.Ref)
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("user %q", cf.Config.User)
	}
	if diff := cmp.Diff([]string{"/secctx"}, cf.Config.Entrypoint); diff != "" {
		t.Errorf("entrypoint (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"serve"}, cf.Config.Cmd); diff != "" {
		t.Errorf("cmd (-want +got):\n%s", diff)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var files []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			files = append(files, h.Name)
		}
	}
	sort.Strings(files)
	want := []string{"etc/group", "etc/passwd", "etc/ssl/certs/ca-certificates.crt", "secctx"}
	if len(files) == 3 { // no CA bundle on this machine
		want = []string{"etc/group", "etc/passwd", "secctx"}
	}
	if diff := cmp.Diff(want, files); diff != "" {
		t.Errorf("files in the image (-want +got); there must be no shell:\n%s", diff)
	}
}
