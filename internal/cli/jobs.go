package cli

import (
	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/internal/gc"
	"github.com/berth-registry/berth/internal/referrers"
	"github.com/berth-registry/berth/internal/retention"
)

func init() {
	extraCommands = append(extraCommands,
		func() *cobra.Command { return retention.NewPruneCommand() },
		func() *cobra.Command { return gc.NewCommand() },
		func() *cobra.Command { return referrers.NewMigrateCommand() },
	)
}
