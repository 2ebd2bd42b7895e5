/* to be written */ typedef int peft_placeholder_model;
