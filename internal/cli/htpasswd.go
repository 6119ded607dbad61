package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"
)

func newHtpasswdCommand() *cobra.Command {
	var file, password string
	var fromStdin bool
	cmd := &cobra.Command{
		Use:   "htpasswd USER",
		Short: "Make a bcrypt htpasswd entry (reads the password from stdin)",
		Long: `Make a bcrypt htpasswd entry for USER. The password is read from stdin (one line), or from
--password for scripts that cannot use stdin. With --file the entry is added to the file (an existing entry
for USER is replaced); otherwise it is printed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			user := args[0]
			if user == "" || strings.ContainsAny(user, ":\n\r") {
				return usageError{errors.New("user names cannot be empty or contain ':' or newlines")}
			}
			if password == "" || fromStdin {
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("read password: %w", err)
				}
				password = strings.TrimRight(line, "\r\n")
			}
			if password == "" {
				return usageError{errors.New("empty password")}
			}
			hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
			if err != nil {
				return fmt.Errorf("hash password: %w", err)
			}
			entry := user + ":" + string(hash)
			if file == "" {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), entry)
				return err
			}
			return upsertEntry(file, user, entry)
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "htpasswd file to add the entry to (created with mode 0600)")
	cmd.Flags().StringVar(&password, "password", "", "the password (visible in process lists; prefer stdin)")
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from stdin (the default)")
	return cmd
}

func upsertEntry(file, user, entry string) error {
	old, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", file, err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(old), "\n"), "\n") {
		if l == "" || strings.HasPrefix(l, user+":") {
			continue
		}
		lines = append(lines, l)
	}
	lines = append(lines, entry)
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("replace %s: %w", file, err)
	}
	return nil
}
