"""The command verbs: one thin module per verb (parse options, call one function, print)."""
