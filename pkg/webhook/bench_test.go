package webhook

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
)

// BenchmarkServeHTTP is the whole request path: AdmissionReview bytes in,
// response bytes out, for the reference task pod with 1, 3 and 20 secrets,
// and with no SecurityContext (secrets=0: the cost of saying no).
func BenchmarkServeHTTP(b *testing.B) {
	for _, n := range []int{0, 1, 3, 20} {
		b.Run(fmt.Sprintf("secrets=%d", n), func(b *testing.B) {
			h, _ := newTestHandler(b)
			body := reviewBytes(b, taskPod(b, n), admissionv1.Create)
			req, _ := http.NewRequest(http.MethodPost, MutatePath, nil)
			req.Header.Set("Content-Type", "application/json")
			w := &discardWriter{header: http.Header{}}
			rd := bytes.NewReader(body)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(body)
				req.Body = io.NopCloser(rd)
				w.n = 0
				h.ServeHTTP(w, req)
			}
			if w.n == 0 {
				b.Fatal("no response written")
			}
		})
	}
}

type discardWriter struct {
	header http.Header
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.header }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
