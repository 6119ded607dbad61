package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/internal/config"
)

func newConfigCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Inspect the configuration"}
	var file string
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration (defaults, file, REGISTRY_* environment) with secrets redacted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(file, config.Overrides{})
			if err != nil {
				return err
			}
			b, err := cfg.Redacted()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate the configuration; exit 2 naming the file, line and key at fault",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := loadConfig(file, config.Overrides{}); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "configuration ok")
			return nil
		},
	}
	for _, c := range []*cobra.Command{print, check} {
		c.Flags().StringVar(&file, "config", "", "configuration file (default: built-in defaults)")
	}
	cmd.AddCommand(print, check)
	return cmd
}
