// Command berth is a self-maintaining private container registry.
package main

import (
	"os"

	"github.com/berth-registry/berth/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
