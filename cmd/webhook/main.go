// Command secctx is the secctx binary: the admission webhook (serve), offline
// injection (inject) and build info (version).
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
