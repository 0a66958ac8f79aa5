// Package inject turns a pod's SecurityContext into what the pod needs: secret
// env vars and volumes, a service account, identity labels. Its functions are
// pure and idempotent: they work on a copy of the typed pod, never do I/O
// themselves (lookups come in through small interfaces), and running them on
// their own output changes nothing. AppendPatch turns the change into
// targeted JSON patch operations at the paths secctx owns.
package inject
