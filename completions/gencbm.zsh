#compdef gencbm

_gencbm_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _GENCBM_COMPLETE=complete_zsh gencbm)
}

compdef _gencbm_completion gencbm
