// Command etcd is the etcd server built from its Go module, for the test control plane
// (no release binaries can be downloaded on these machines).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
