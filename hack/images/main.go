// Command images builds secctx's image and the test images as tarballs,
// without Docker or a registry (`make images`). `ctr images import`,
// `kind load image-archive` and `docker load` take them.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/secctx/secctx/test/framework"
)

func main() {
	out := "bin/images"
	if len(os.Args) > 1 {
		out = os.Args[1]
	}
	tars, err := framework.BuildImages(context.Background(), framework.Root(), out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
	for _, t := range tars {
		fmt.Println(t)
	}
}
