# fish completion for rotator, installed with it. The completions themselves come from the installed
# rotator, generated from its command line's parser (rotator completion fish), so they always match it.
if command -q rotator
    rotator completion fish 2>/dev/null | source
end
